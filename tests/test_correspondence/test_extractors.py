"""Correspondence feature extractors on tiny models built from configs (no network)."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

from common.teachers import DiffusionTeacher
from correspondence.models import (DiffusionExtractor, DINOv2Extractor, FusedExtractor,
                                   PixelExtractor, RandomInitExtractor)
from correspondence.models.extractors import IMAGENET_MEAN, IMAGENET_STD, pca_project
from tests.helpers.tiny_models import (TINY_DINO, save_ddpm_pipeline, save_dinov2_models,
                                       save_sd_pipeline)



def rand_images(n=2, h=28, w=42, seed=0):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def imagenet_normalise(x):
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.fixture(scope='module')
def dino_dirs(tmp_path_factory):
    return save_dinov2_models(tmp_path_factory.mktemp('dino'))


@pytest.fixture(scope='module')
def ddpm_dir(tmp_path_factory):
    return save_ddpm_pipeline(str(tmp_path_factory.mktemp('ddpm') / 'pipe'))


@pytest.fixture(scope='module')
def sd_dir(tmp_path_factory):
    return save_sd_pipeline(str(tmp_path_factory.mktemp('sd') / 'pipe'))


# ---------------------------------------------------------------------------------------- DINOv2
def _reference(extractor, x, n_prefix):
    """transformers' own outputs on a hand-normalised input, tokens dropped and reshaped."""
    with torch.no_grad():
        out = extractor.model(pixel_values=imagenet_normalise(x), output_hidden_states=True)
    b, _, h, w = x.shape

    def grid(tokens):
        return tokens[:, n_prefix:].transpose(1, 2).reshape(b, -1, h // 14, w // 14)

    return out, grid


@pytest.mark.parametrize('kind,n_prefix', [('plain', 1), ('reg', 5)])
def test_dinov2_equals_transformers_tokens(dino_dirs, kind, n_prefix):
    x = rand_images()
    last = MODELS.build(dict(type='DINOv2Extractor', pretrained=dino_dirs[kind]))
    assert last.num_prefix_tokens == n_prefix and last.stride == 14
    feats = last(x)
    assert feats.shape == (2, 32, 2, 3) and feats.dtype == torch.float32
    out, grid = _reference(last, x, n_prefix)
    torch.testing.assert_close(feats, grid(out.last_hidden_state))  # -1: after the final norm
    for layer in (0, 1, 2):
        raw = DINOv2Extractor(dino_dirs[kind], layer=layer, final_norm=False)(x)
        torch.testing.assert_close(raw, grid(out.hidden_states[layer]))
    torch.testing.assert_close(DINOv2Extractor(dino_dirs[kind], layer=2)(x), feats)
    normed = DINOv2Extractor(dino_dirs[kind], layer=1, final_norm=True)(x)
    with torch.no_grad():
        torch.testing.assert_close(normed, grid(last.model.layernorm(out.hidden_states[1])))
    assert not torch.allclose(DINOv2Extractor(dino_dirs[kind], layer=-2)(x), feats)


def test_dinov2_normalises_inside(dino_dirs):
    ext = DINOv2Extractor(dino_dirs['plain'])
    x = rand_images()
    with torch.no_grad():
        manual = ext.model(pixel_values=imagenet_normalise(x)).last_hidden_state
        raw = ext.model(pixel_values=x).last_hidden_state
    ref = manual[:, 1:].transpose(1, 2).reshape(2, 32, 2, 3)
    torch.testing.assert_close(ext(x), ref)
    assert not torch.allclose(raw[:, 1:].transpose(1, 2).reshape(2, 32, 2, 3), ref)


def test_dinov2_rejects_sizes_not_multiple_of_patch(dino_dirs):
    ext = DINOv2Extractor(dino_dirs['plain'])
    with pytest.raises(ValueError, match=r'30x42 pixels .* not multiples of the patch size 14'):
        ext(rand_images(h=30))
    with pytest.raises(ValueError, match='float RGB images'):
        ext((rand_images() * 255).byte())
    with pytest.raises(ValueError, match='outside this model'):
        DINOv2Extractor(dino_dirs['plain'], layer=3)


def test_dinov2_from_config_frozen_and_init_weights_keep_weights(dino_dirs):
    ext = DINOv2Extractor(config=dict(model_type='dinov2_with_registers', num_register_tokens=2,
                                      **TINY_DINO))
    assert ext.num_prefix_tokens == 3 and ext(rand_images()).shape == (2, 32, 2, 3)
    with pytest.raises(ValueError, match='exactly one of pretrained'):
        DINOv2Extractor()
    with pytest.raises(FileNotFoundError, match='no such folder'):
        DINOv2Extractor('./missing/dinov2')
    ext = DINOv2Extractor(dino_dirs['plain'])
    assert not any(p.requires_grad for p in ext.parameters())
    ext.train()
    assert not ext.model.training
    x = rand_images()
    before = ext(x)
    ext.init_weights()  # mmengine's runner does this; loaded weights must survive
    torch.testing.assert_close(ext(x), before)
    trainable = DINOv2Extractor(dino_dirs['plain'], frozen=False)
    trainable(x).sum().backward()
    assert trainable.model.embeddings.patch_embeddings.projection.weight.grad is not None


# ------------------------------------------------------------------------------------- diffusion
def test_diffusion_extractor_equals_teacher_on_pixel_ddpm(ddpm_dir):
    ext = MODELS.build(dict(type='DiffusionExtractor',
                            teacher=dict(type='DiffusionTeacher', pretrained=ddpm_dir,
                                         layers=['up_blocks.0'], timesteps=[10], seed=0),
                            layer='mid_block', timestep=50))
    teacher = DiffusionTeacher(ddpm_dir, layers=['mid_block'], timesteps=[50], seed=0)
    x = rand_images(2, 16, 16)
    feats = ext(x, categories=['cat', 'dog'])  # categories ignored without a template
    torch.testing.assert_close(feats, teacher(x * 2 - 1)['mid_block@50'])
    assert feats.dim() == 4 and ext.stride == 16 / feats.shape[-1]
    with pytest.raises(ValueError, match='not text-conditioned'):
        DiffusionExtractor(teacher, prompt_template='a photo of a {category}')
    with pytest.raises(ValueError, match='computes'):
        DiffusionExtractor(teacher, layer='up_blocks.0')


def test_diffusion_extractor_on_sd_with_category_prompts(sd_dir):
    cfg = dict(type='DiffusionTeacher', pretrained=sd_dir, layers=['up_blocks.1'],
               timesteps=[261], seed=0, prompt='')
    ext = DiffusionExtractor(cfg, prompt_template='a photo of a {category}')
    x = rand_images(3, 16, 16)
    calls = []
    encoder = ext.teacher._parts.text_encoders[0]
    handle = encoder.register_forward_hook(lambda *a: calls.append(1))
    feats = ext(x, categories=['cat', 'dog', 'cat'])
    assert len(calls) == 2  # once per distinct prompt
    ext(x, categories=['dog', 'cat', 'cat'])
    assert len(calls) == 2  # cached
    handle.remove()
    for i, cat in enumerate(['cat', 'dog', 'cat']):
        own = DiffusionTeacher(sd_dir, layers=['up_blocks.1'], timesteps=[261], seed=0,
                               prompt=f'a photo of a {cat}')
        torch.testing.assert_close(feats[i:i + 1], own(x[i:i + 1] * 2 - 1)['up_blocks.1@261'],
                                   atol=1e-5, rtol=1e-4)
    empty = DiffusionExtractor(cfg)(x)  # no template: the teacher's configured prompt
    torch.testing.assert_close(empty, DiffusionTeacher(**{k: v for k, v in cfg.items()
                                                          if k != 'type'})(x * 2 - 1)
                               ['up_blocks.1@261'])
    with pytest.raises(ValueError, match='needs the images\' categories'):
        ext(x)


# ---------------------------------------------------------------------------------------- fusion
class Constant(torch.nn.Module):
    """A stand-in extractor returning fixed features."""

    def __init__(self, feats):
        super().__init__()
        self.feats = feats

    def forward(self, images, categories=None):
        return self.feats


def test_fused_normalises_resizes_and_weights():
    a = torch.randn(2, 5, 4, 6, generator=torch.Generator().manual_seed(0)) * 3
    b = torch.randn(2, 7, 2, 3, generator=torch.Generator().manual_seed(1))
    fused = FusedExtractor([Constant(a), Constant(b)], weights=[1.0, 0.5])
    out = fused(rand_images())
    assert out.shape == (2, 12, 4, 6)
    torch.testing.assert_close(out[:, :5], a / a.norm(dim=1, keepdim=True))
    b_up = F.interpolate(b, size=(4, 6), mode='bilinear', align_corners=False)
    torch.testing.assert_close(out[:, 5:], 0.5 * b_up / b_up.norm(dim=1, keepdim=True))
    torch.testing.assert_close(out[:, 5:].norm(dim=1), torch.full((2, 4, 6), 0.5))
    assert FusedExtractor([Constant(a), Constant(b)], size=(8, 8))(None).shape == (2, 12, 8, 8)
    assert FusedExtractor([Constant(b), Constant(a)], size='largest')(None).shape[-2:] == (4, 6)
    raw = FusedExtractor([Constant(a), Constant(b)], normalize=False)(None)
    torch.testing.assert_close(raw[:, :5], a)
    with pytest.raises(ValueError, match='one value per extractor'):
        FusedExtractor([Constant(a), Constant(b)], weights=[1.0])


def test_fused_pca_reproduces_top_components():
    g = torch.Generator().manual_seed(0)
    # low-rank-ish features so the top components are well separated
    basis = torch.randn(3, 16, generator=g) * torch.tensor([5.0, 3.0, 2.0]).view(3, 1)
    coeff = torch.randn(2, 5, 6, 3, generator=g)
    feats = (coeff @ basis + 0.01 * torch.randn(2, 5, 6, 16, generator=g)).permute(0, 3, 1, 2)
    out = FusedExtractor([Constant(feats)], pca_dim=3, normalize=False)(None)
    assert out.shape == (2, 3, 5, 6)
    tokens = feats.permute(0, 2, 3, 1).reshape(-1, 16).double()
    centred = tokens - tokens.mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    ref = (centred @ vh[:3].T).float().reshape(2, 5, 6, 3).permute(0, 3, 1, 2)
    signs = torch.sign((out * ref).sum(dim=(0, 2, 3))).view(1, 3, 1, 1)
    torch.testing.assert_close(out, ref * signs, atol=1e-4, rtol=1e-4)
    # co-PCA: the basis is fitted on the whole batch, so one image alone gives other features
    alone = pca_project(feats[:1], 3)
    assert not torch.allclose(alone, out[:1], atol=1e-3)
    # per-source pca dims, then the per-source L2 normalisation
    both = FusedExtractor([Constant(feats), Constant(feats)], pca_dim=[3, None])(None)
    assert both.shape == (2, 19, 5, 6)
    torch.testing.assert_close(both[:, :3], F.normalize(out, dim=1))
    with pytest.raises(ValueError, match='pca_dim=17'):
        pca_project(feats, 17)


def test_fused_dino_and_diffusion_from_configs(dino_dirs, ddpm_dir):
    fused = MODELS.build(dict(
        type='FusedExtractor', size=(2, 2),
        extractors=[dict(type='DINOv2Extractor', pretrained=dino_dirs['plain']),
                    dict(type='DiffusionExtractor', layer='mid_block', timestep=50,
                         teacher=dict(type='DiffusionTeacher', pretrained=ddpm_dir,
                                      layers=['mid_block'], timesteps=[50], seed=0))]))
    out = fused(rand_images(2, 28, 28), categories=['a', 'b'])
    assert out.shape == (2, 32 + 64, 2, 2)
    torch.testing.assert_close(out[:, :32].norm(dim=1), torch.ones(2, 2, 2))


# ------------------------------------------------------------------------------------ baselines
def test_pixel_extractor_by_hand():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4) / 96
    torch.testing.assert_close(PixelExtractor()(x), x)
    out = MODELS.build(dict(type='PixelExtractor', size=(2, 2)))(x)
    assert out.shape == (2, 3, 2, 2)
    # top-left cell of image 0, channel 0: pixels 0, 1, 4, 5
    assert out[0, 0, 0, 0].item() == pytest.approx((0 + 1 + 4 + 5) / 4 / 96)
    # bottom-right cell of image 1, channel 2: offset 80 + pixels 10, 11, 14, 15
    assert out[1, 2, 1, 1].item() == pytest.approx((80 + (10 + 11 + 14 + 15) / 4) / 96)


def test_random_init_extractor_is_seeded_and_frozen():
    backbone = dict(type='mmpretrain.ResNet', depth=18, out_indices=(1, 2))
    a = RandomInitExtractor(backbone, seed=0)
    state = torch.random.get_rng_state()
    b = RandomInitExtractor(backbone, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    x = rand_images(1, 64, 64)
    fa = a(x)
    assert fa.shape == (1, 256, 4, 4) and a.stride == 16
    torch.testing.assert_close(b(x), fa)
    assert not torch.allclose(RandomInitExtractor(backbone, seed=1)(x), fa)
    assert not any(p.requires_grad for p in a.parameters())


def test_diffusion_extractor_several_layers_and_timesteps_from_one_teacher(ddpm_dir):
    teacher = DiffusionTeacher(ddpm_dir, layers=['up_blocks.0', 'mid_block'],
                               timesteps=[10, 50], seed=0)
    x = rand_images(2, 16, 16)
    ref = teacher(x * 2 - 1)
    cat = DiffusionExtractor(teacher, layer=['up_blocks.0', 'mid_block'], timestep=50)
    grid = ref['up_blocks.0@50'].shape[-2:]
    mid_up = F.interpolate(ref['mid_block@50'], size=grid, mode='bilinear', align_corners=False)
    torch.testing.assert_close(cat(x), torch.cat([ref['up_blocks.0@50'], mid_up], dim=1))
    assert cat.keys == ['up_blocks.0@50', 'mid_block@50'] and cat.key == 'up_blocks.0@50'
    mean = DiffusionExtractor(teacher, layer='up_blocks.0', timestep=[10, 50], combine='mean')
    torch.testing.assert_close(mean(x), (ref['up_blocks.0@10'] + ref['up_blocks.0@50']) / 2)
    if ref['up_blocks.0@10'].shape[1] != ref['mid_block@10'].shape[1]:
        with pytest.raises(ValueError, match="combine='mean' needs features with one channel"):
            DiffusionExtractor(teacher, layer=['up_blocks.0', 'mid_block'], timestep=10,
                               combine='mean')(x)
    with pytest.raises(ValueError, match="combine='max'"):
        DiffusionExtractor(teacher, layer='mid_block', timestep=10, combine='max')
    with pytest.raises(ValueError, match=r"not \['mid_block@99'\]"):
        DiffusionExtractor(teacher, layer='mid_block', timestep=[10, 99])


class SizeProbe(torch.nn.Module):
    """Returns its input images (so the fused output shows what each source saw)."""

    def forward(self, images, categories=None):
        return images


def test_fused_resizes_each_source_input():
    x = rand_images(1, 8, 12)
    fused = FusedExtractor([SizeProbe(), SizeProbe()], input_sizes=[None, 4], size='first',
                           normalize=False)
    out = fused(x)
    small = F.interpolate(x, size=(4, 4), mode='bilinear', align_corners=False, antialias=True)
    back = F.interpolate(small, size=(8, 12), mode='bilinear', align_corners=False)
    torch.testing.assert_close(out[:, :3], x)
    torch.testing.assert_close(out[:, 3:], back)
    with pytest.raises(ValueError, match='input_sizes'):
        FusedExtractor([SizeProbe(), SizeProbe()], input_sizes=[4])


def test_backbone_student_starts_from_the_random_init_baseline_and_trains():
    from correspondence.models.extractors import BackboneStudent
    backbone = dict(type='mmpretrain.ResNet', depth=18, out_indices=(1, ))
    baseline = RandomInitExtractor(backbone, seed=3)
    student = BackboneStudent(backbone, seed=3)
    x = rand_images(2, 32, 32)
    torch.testing.assert_close(student.eval()(x), baseline(x))
    assert all(p.requires_grad for p in student.parameters())
    student.train()(x).sum().backward()
    used = {n: p.grad is not None for n, p in student.named_parameters()}
    # out_indices=(1, ): the stem, layer1 and layer2 feed the output, layer3/4 do not
    assert all(v for n, v in used.items() if not n.startswith(('backbone.layer3',
                                                               'backbone.layer4')))
    assert not any(v for n, v in used.items() if n.startswith('backbone.layer3'))
