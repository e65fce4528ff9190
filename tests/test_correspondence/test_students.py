"""Trainable correspondence students (LoRA / full / upscaler / frozen) on tiny random models."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from safetensors.torch import load_file, save_file

from correspondence.models import DiffusionExtractor, DINOv2Extractor
from correspondence.models.students import DiffusionStudent, DINOv2Student, UpscalerHead
from tests.helpers.tiny_models import (TINY_DINO, save_ddpm_pipeline, save_dinov2_models,
                                       save_sd_pipeline)

HIDDEN, BLOCKS = TINY_DINO['hidden_size'], TINY_DINO['num_hidden_layers']


def rand_images(n=2, h=28, w=42, seed=0):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def loss_of(feats, seed=1):
    """A loss whose gradient does not vanish (a plain sum does after a final layernorm)."""
    target = torch.randn(feats.shape, generator=torch.Generator().manual_seed(seed))
    return (feats * target).sum()


def randomise(module, pattern, seed=0):
    """Give every parameter whose name contains ``pattern`` random values (a trained state)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if pattern in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


@pytest.fixture(scope='module')
def dino_dirs(tmp_path_factory):
    return save_dinov2_models(tmp_path_factory.mktemp('dino'))


@pytest.fixture(scope='module')
def sd_teacher(tmp_path_factory):
    pipe = save_sd_pipeline(str(tmp_path_factory.mktemp('sd') / 'pipe'))
    return dict(type='DiffusionTeacher', pretrained=pipe, layers=['up_blocks.1'],
                timesteps=[100], seed=0)


@pytest.fixture(scope='module')
def ddpm_teacher(tmp_path_factory):
    pipe = save_ddpm_pipeline(str(tmp_path_factory.mktemp('ddpm') / 'pipe'))
    return dict(type='DiffusionTeacher', pretrained=pipe, layers=['up_blocks.0'],
                timesteps=[50], seed=0)


# ------------------------------------------------------------------------------------ the head
def test_fresh_upscaler_head_is_bilinear_upsampling():
    x = torch.tensor([[[[0., 1.]]]])
    head = UpscalerHead(1, scale=2)
    # align_corners=False, hand-computed: source x = (i + 0.5) / 2 - 0.5, clamped to [0, 1].
    assert torch.equal(head(x), torch.tensor([[[[0., 0.25, 0.75, 1.]],
                                               [[0., 0.25, 0.75, 1.]]]]).view(1, 1, 2, 4))
    feats = torch.randn(2, 8, 3, 5)
    head = MODELS.build(dict(type='UpscalerHead', in_channels=8, scale=2, hidden_channels=4))
    up = F.interpolate(feats, scale_factor=2, mode='bilinear', align_corners=False)
    assert torch.equal(head(feats), up) and head(feats).shape == (2, 8, 6, 10)
    # mmengine's init redraws the convs but the last one starts at zero again
    head = UpscalerHead(8, init_cfg=dict(type='Kaiming', layer='Conv2d'))
    head.init_weights()
    assert head.refine[0].weight.abs().sum() > 0 and torch.equal(head(feats), up)
    # a trained refinement is added to the upsampled features
    randomise(head, 'refine')
    assert not torch.allclose(head(feats), up)


def test_upscaler_head_projection_and_bad_input():
    feats = torch.randn(1, 8, 2, 2)
    head = UpscalerHead(8, scale=3, out_channels=5)
    up = F.interpolate(feats, size=(6, 6), mode='bilinear', align_corners=False)
    expected = F.conv2d(up, head.project.weight, head.project.bias)
    assert torch.allclose(head(feats), expected, atol=1e-6) and head(feats).shape == (1, 5, 6, 6)
    with pytest.raises(ValueError, match=r'UpscalerHead\(in_channels=8\) takes features '
                                         r'\[B, 8, h, w\], got \(1, 7, 2, 2\)'):
        head(torch.randn(1, 7, 2, 2))
    with pytest.raises(ValueError, match=r'scale=0.5 must be a number >= 1'):
        UpscalerHead(8, scale=0.5)


# ---------------------------------------------------------------------------------------- DINOv2
@pytest.mark.parametrize('kind', ['plain', 'reg'])
def test_fresh_lora_dinov2_student_equals_the_extractor(dino_dirs, kind):
    x = rand_images()
    student = MODELS.build(dict(type='DINOv2Student', pretrained=dino_dirs[kind]))
    student.init_weights()  # as a runner does: must not touch the loaded or the LoRA weights
    reference = DINOv2Extractor(pretrained=dino_dirs[kind])
    feats = student(x)
    assert feats.requires_grad and feats.shape == (2, HIDDEN, 2, 3) and student.stride == 14
    assert torch.equal(feats, reference(x))
    # the frozen mode is the extractor itself, and nothing trains
    frozen = DINOv2Student(pretrained=dino_dirs[kind], mode='frozen')
    assert frozen.trainable_parameter_names() == []
    assert torch.equal(frozen(x), reference(x)) and not frozen(x).requires_grad


def test_lora_dinov2_trains_only_lora_factors(dino_dirs):
    rank = 2
    student = DINOv2Student(pretrained=dino_dirs['reg'],
                            lora=dict(rank=rank, targets=('query', 'key', 'output')))
    names = student.trainable_parameter_names()
    assert names and all('lora_' in n for n in names)
    count = sum(p.numel() for p in student.parameters() if p.requires_grad)
    assert count == rank * (HIDDEN + HIDDEN) * 3 * BLOCKS  # 3 square targets x 2 blocks = 768
    # the DistillDIFT default: q and v, rank 8
    default = DINOv2Student(pretrained=dino_dirs['reg'])
    assert sum(p.numel() for p in default.parameters() if p.requires_grad) \
        == 8 * (HIDDEN + HIDDEN) * 2 * BLOCKS
    assert {n.split('.')[5] for n in default.trainable_parameter_names()} == {'q_proj', 'v_proj'}

    student.train()
    loss_of(student(rand_images())).backward()
    for name, p in student.named_parameters():
        if 'lora_B' in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        elif 'lora_A' in name:  # B = 0 at the start: dL/dA = B^T (...) is exactly zero
            assert p.grad is not None and torch.equal(p.grad, torch.zeros_like(p)), name
        else:  # the wrapped projections (DistillDIFT's release bug trained them) stay frozen
            assert p.grad is None and not p.requires_grad, name
    randomise(student, 'lora_B')
    student.zero_grad()
    loss_of(student(rand_images())).backward()
    for name, p in student.named_parameters():
        if 'lora_' in name:
            assert p.grad.abs().sum() > 0, name


def test_lora_layer_is_base_plus_scaled_low_rank_update_with_dropout_on_its_input(dino_dirs):
    student = DINOv2Student(pretrained=dino_dirs['plain'],
                            lora=dict(rank=4, alpha=8, dropout=0.5))
    randomise(student, 'lora_B')
    layer = student.model.encoder.layer[1].attention.v_proj
    base, a, b = layer.base_layer, layer.lora_A['default'], layer.lora_B['default']
    x = torch.randn(3, HIDDEN)
    student.eval()
    expected = F.linear(x, base.weight, base.bias) + (x @ a.weight.T @ b.weight.T) * (8 / 4)
    assert torch.allclose(layer(x), expected, atol=1e-6)
    # train(): the frozen backbone stays in eval mode, only the LoRA dropouts train
    student.train()
    assert student.training and not student.model.training
    assert not student.model.encoder.layer[1].attention.training
    assert layer.lora_dropout['default'].training
    torch.manual_seed(0)
    y = layer(x)
    torch.manual_seed(0)
    mask = F.dropout(torch.ones_like(x), 0.5)  # the same draw, on the LoRA input
    assert torch.allclose(y, F.linear(x, base.weight, base.bias)
                          + ((x * mask) @ a.weight.T @ b.weight.T) * 2, atol=1e-6)


def test_full_and_upscaler_dinov2_modes(dino_dirs):
    x = rand_images()
    full = DINOv2Student(pretrained=dino_dirs['plain'], mode='full')
    assert full.trainable_parameter_names() == [n for n, _ in full.named_parameters()]
    full.train()
    assert full.model.training
    loss_of(full(x)).backward()
    assert full.model.embeddings.patch_embeddings.projection.weight.grad.abs().sum() > 0

    up = DINOv2Student(pretrained=dino_dirs['plain'], mode='upscaler')
    assert up.trainable_parameter_names() == ['head.refine.0.weight', 'head.refine.0.bias',
                                              'head.refine.2.weight', 'head.refine.2.bias']
    assert up.stride == 7
    feats = up(x)
    base = DINOv2Extractor(pretrained=dino_dirs['plain'])(x)
    assert feats.shape == (2, HIDDEN, 4, 6)
    assert torch.equal(feats, F.interpolate(base, scale_factor=2, mode='bilinear',
                                            align_corners=False))
    up.train()
    assert not up.model.training and up.head.training
    loss_of(feats).backward()
    assert up.head.refine[2].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in up.model.parameters())
    # a head in LoRA mode trains with the adapters
    lora_head = DINOv2Student(pretrained=dino_dirs['plain'],
                              head=dict(type='UpscalerHead', in_channels=HIDDEN, scale=1))
    names = lora_head.trainable_parameter_names()
    assert {n.split('.')[0] for n in names} == {'model', 'head'}
    assert all('lora_' in n for n in names if n.startswith('model.'))


@pytest.mark.parametrize('mode,pattern', [('lora', 'lora_'), ('upscaler', 'head.'),
                                          ('full', 'attention')])
def test_dinov2_checkpoint_round_trip(dino_dirs, tmp_path, mode, pattern):
    x = rand_images()
    cfg = dict(type='DINOv2Student', pretrained=dino_dirs['reg'], mode=mode)
    trained = MODELS.build(cfg)
    randomise(trained, pattern)
    path = str(tmp_path / 'student.safetensors')
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, path)
    fresh = MODELS.build(cfg)
    trained.eval(), fresh.eval()
    assert not torch.allclose(fresh(x), trained(x))
    fresh.load_state_dict(load_file(path), strict=True)
    assert torch.equal(fresh(x), trained(x))


def test_dinov2_student_errors(dino_dirs):
    with pytest.raises(ValueError, match=r"DINOv2Student mode='lora2' is not one of \('lora', "
                                         r"'full', 'upscaler', 'frozen'\)"):
        DINOv2Student(pretrained=dino_dirs['plain'], mode='lora2')
    with pytest.raises(ValueError, match=r"lora target 'qkv' is not one of \('query', 'key', "
                                         r"'value', 'output'\).*encoder\.layer\.0\.attention\."
                                         r"q_proj"):
        DINOv2Student(pretrained=dino_dirs['plain'], lora=dict(targets=('query', 'qkv')))
    with pytest.raises(ValueError, match=r"lora has unknown keys \['r'\]; the keys are"):
        DINOv2Student(pretrained=dino_dirs['plain'], lora=dict(r=4))
    with pytest.raises(ValueError, match=r"mode='full' trains weights of the backbone, which "
                                         r"is held in float16.*Set dtype='float32'"):
        DINOv2Student(pretrained=dino_dirs['plain'], mode='full', dtype='float16')


# ------------------------------------------------------------------------------------- diffusion
def _lora_grads_checked(student, images, categories=None):
    student.train()
    loss_of(student(images, categories)).backward()
    seen = 0
    for name, p in student.named_parameters():
        if 'lora_B' in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
            seen += 1
        elif 'lora_A' in name:
            assert torch.equal(p.grad, torch.zeros_like(p)), name
        else:
            assert p.grad is None and not p.requires_grad, name
    assert seen
    randomise(student, 'lora_B')
    student.zero_grad()
    loss_of(student(images, categories)).backward()
    assert all(p.grad.abs().sum() > 0 for n, p in student.named_parameters() if 'lora_' in n)


def test_lora_ddpm_student(ddpm_teacher):
    x = rand_images(2, 16, 16)
    student = MODELS.build(dict(type='DiffusionStudent', teacher=ddpm_teacher))
    reference = DiffusionExtractor(ddpm_teacher)
    feats = student(x)
    assert feats.requires_grad and feats.shape == (2, 64, 16, 16) and student.stride == 1
    assert torch.equal(feats, reference(x))  # B = 0: exactly the frozen features
    assert torch.equal(student(x), feats)  # the teacher's seeded noise: deterministic
    # 4 attentions of 64 channels (down_blocks.1, mid, 2 in up_blocks.0), to_q and to_v
    assert sum(p.numel() for p in student.parameters() if p.requires_grad) \
        == 4 * 2 * 8 * (64 + 64)
    # only the UNet is in the module tree
    keys = list(student.state_dict())
    assert keys and all(k.startswith('unet.') for k in keys)
    assert len({id(p) for p in student.parameters()}) == len(list(student.unet.parameters()))
    student.train()
    assert student.training and not student.unet.training and not student.teacher.unet.training
    _lora_grads_checked(student, x)


def test_lora_sd_student_counts_grads_and_prompts(sd_teacher):
    x = rand_images(2, 32, 32)
    cats = ['cat', 'dog']
    student = DiffusionStudent(sd_teacher, prompt_template='a photo of a {category}')
    # 16-channel level: 3 transformer blocks (1 down, 2 up), attn1 q, v and attn2 q (16 -> 16)
    # and attn2 v (cross_attention_dim 16 -> 16); the 32-channel mid block: three 32 -> 32 and
    # attn2 v 16 -> 32.
    expected = 8 * (3 * 4 * (16 + 16) + 3 * (32 + 32) + (16 + 32))
    assert sum(p.numel() for p in student.parameters() if p.requires_grad) == expected == 4992
    keys = list(student.state_dict())
    assert all(k.startswith('unet.') for k in keys)
    assert not any('vae' in k or 'text' in k for k in keys)
    _lora_grads_checked(student, x, cats)
    with pytest.raises(ValueError, match=r'needs the images\' categories'):
        student(x)


def test_fresh_sd_student_matches_the_teacher_with_sampled_latents_and_ensemble(sd_teacher):
    teacher = dict(sd_teacher, ensemble=2, latent='sample', seed=3)
    x = rand_images(2, 32, 32)
    student = DiffusionStudent(teacher, lora=dict(targets=('to_k', 'to_out.0'), rank=2))
    assert torch.allclose(student(x), DiffusionExtractor(teacher)(x), atol=1e-6)


def test_full_and_upscaler_diffusion_modes(ddpm_teacher):
    x = rand_images(2, 16, 16)
    full = DiffusionStudent(ddpm_teacher, mode='full')
    assert full.trainable_parameter_names() == [n for n, _ in full.named_parameters()]
    full.train()
    assert full.unet.training
    loss_of(full(x)).backward()
    assert full.unet.conv_in.weight.grad.abs().sum() > 0
    assert full.unet.conv_out.weight.grad is None  # after the recorded layer (early exit)

    up = DiffusionStudent(ddpm_teacher, mode='upscaler')
    assert up.trainable_parameter_names() == ['head.refine.0.weight', 'head.refine.0.bias',
                                              'head.refine.2.weight', 'head.refine.2.bias']
    feats = up(x)
    assert feats.shape == (2, 64, 32, 32) and up.stride == 0.5
    frozen = DiffusionExtractor(ddpm_teacher)(x)
    assert torch.equal(feats, F.interpolate(frozen, scale_factor=2, mode='bilinear',
                                            align_corners=False))
    loss_of(feats).backward()
    assert all(p.grad is None for p in up.unet.parameters())
    assert up.head.refine[2].weight.grad.abs().sum() > 0
    # several layers concatenated: the default head cannot know the width, an explicit one can
    with pytest.raises(ValueError, match=r"could not read the channels of the features "
                                         r"\['up_blocks.0@50', 'mid_block@50'\]: give the head"):
        DiffusionStudent(ddpm_teacher, layer=['up_blocks.0', 'mid_block'], mode='upscaler')
    both = DiffusionStudent(ddpm_teacher, layer=['up_blocks.0', 'mid_block'], mode='upscaler',
                            head=dict(type='UpscalerHead', in_channels=128, scale=1))
    assert both(x).shape == (2, 128, 16, 16)
    frozen_student = DiffusionStudent(ddpm_teacher, mode='frozen')
    assert frozen_student.trainable_parameter_names() == []
    assert torch.equal(frozen_student(x), frozen)


@pytest.mark.parametrize('mode,pattern', [('lora', 'lora_'), ('full', 'up_blocks.0')])
def test_diffusion_checkpoint_round_trip(ddpm_teacher, tmp_path, mode, pattern):
    x = rand_images(2, 16, 16)
    cfg = dict(type='DiffusionStudent', teacher=ddpm_teacher, mode=mode)
    trained = MODELS.build(cfg)
    randomise(trained, pattern)
    path = str(tmp_path / 'student.safetensors')
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, path)
    fresh = MODELS.build(cfg)
    assert not torch.allclose(fresh(x), trained(x))
    fresh.load_state_dict(load_file(path), strict=True)
    assert torch.equal(fresh(x), trained(x))


def test_diffusion_student_errors(ddpm_teacher, tmp_path):
    with pytest.raises(ValueError, match=r"DiffusionStudent mode='LoRA' is not one of "
                                         r"\('lora', 'full', 'upscaler', 'frozen'\)"):
        DiffusionStudent(ddpm_teacher, mode='LoRA')
    with pytest.raises(ValueError, match=r"lora target 'to_query' names no linear layer of this "
                                         r"UNet \(UNet2DModel\)\. Its linear layers are named "
                                         r"\[.*'to_out\.0', 'to_q', 'to_v'\]"):
        DiffusionStudent(ddpm_teacher, lora=dict(targets=('to_q', 'to_query')))
    with pytest.raises(ValueError, match=r"mode='full' trains through one layer@t feature, but "
                                         r"this config asks for \['up_blocks.0@50', "
                                         r"'up_blocks.0@60'\]"):
        DiffusionStudent(ddpm_teacher, timestep=[50, 60], mode='full')
    with pytest.raises(ValueError, match=r'the teacher has a feature cache.*Remove cache_dir'):
        DiffusionStudent(dict(ddpm_teacher, cache_dir=str(tmp_path)))
    with pytest.raises(ValueError, match=r"mode='lora' trains weights of the backbone, which is "
                                         r"held in bfloat16"):
        DiffusionStudent(dict(ddpm_teacher, dtype='bfloat16'))
