"""Diffusion Hyperfeatures extractor (correspondence/models/hyperfeatures.py) on tiny random
diffusion models: the conv2 hook is the residual branch, DDIM inversion matches a hand-written
update, the aggregation mixes with softmax weights, only it trains and only it is saved, and the
zero-shot config builds and predicts."""
import copy
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import DATASETS, MODELS

import common  # noqa: F401  registers the teachers
import correspondence  # noqa: F401  registers datasets, transforms, extractors, metric
from correspondence.datasets.transforms import pair_collate
from correspondence.models.hyperfeatures import (HyperfeatureAggregation, HyperfeatureExtractor,
                                                 decoder_resnet_layers, inversion_schedule)
from tests.helpers.tiny_models import save_ddpm_pipeline, save_sd_pipeline, tiny_unet2d

from .fake_releases import write_spair

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO_ROOT, 'correspondence', 'configs', 'zero_shot',
                  'hyperfeatures_sd15-one-step_224px_spair71k.py')
SMALL = dict(projection_dim=32, output_size=8, num_norm_groups=8)


@pytest.fixture(scope='module')
def sd(tmp_path_factory):
    return save_sd_pipeline(str(tmp_path_factory.mktemp('hf') / 'sd'))


@pytest.fixture(scope='module')
def ddpm(tmp_path_factory):
    return save_ddpm_pipeline(str(tmp_path_factory.mktemp('hf') / 'ddpm'))


def sd_teacher(folder):
    return dict(type='DiffusionTeacher', pretrained=folder, prompt='', latent='mean')


def images(n=2, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------ the conv2 hook
def test_conv2_hook_is_the_residual_branch():
    """In diffusers' ResnetBlock2D the output of conv2 is the residual branch before the
    shortcut add: block output * output_scale_factor - shortcut(input), and the branch
    recomputed by hand from the block's own parts."""
    unet = tiny_unet2d().eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([10, 500])
    names = decoder_resnet_layers(unet)
    assert names == ['up_blocks.0.resnets.0.conv2', 'up_blocks.0.resnets.1.conv2',
                     'up_blocks.1.resnets.0.conv2', 'up_blocks.1.resnets.1.conv2']
    seen, handles = {}, []
    for name in names:
        block = unet.get_submodule(name.rsplit('.', 1)[0])

        def pre(module, args, key=name):
            seen[key] = dict(inp=args[0], temb=args[1])

        def post(module, args, out, key=name):
            seen[key]['out'] = out

        def conv(module, args, out, key=name):
            seen[key]['conv2'] = out

        handles += [block.register_forward_pre_hook(pre), block.register_forward_hook(post),
                    block.conv2.register_forward_hook(conv)]
    with torch.no_grad():
        unet(x, t)
    for h in handles:
        h.remove()
    for name in names:
        block = unet.get_submodule(name.rsplit('.', 1)[0])
        s = seen[name]
        with torch.no_grad():
            shortcut = block.conv_shortcut(s['inp']) if block.conv_shortcut is not None \
                else s['inp']
            torch.testing.assert_close(s['out'] * block.output_scale_factor - shortcut,
                                       s['conv2'], rtol=1e-5, atol=1e-5)
            h = F.silu(block.norm1(s['inp']))
            h = block.conv1(h) + block.time_emb_proj(F.silu(s['temb']))[:, :, None, None]
            h = block.conv2(F.silu(block.norm2(h)))
        assert block.conv_shortcut is not None  # the decoder blocks take skip concatenations
        torch.testing.assert_close(h, s['conv2'], rtol=0, atol=0)


# ------------------------------------------------------------------------ DDIM inversion
def test_inversion_schedule_matches_the_reference_indices():
    t_eval, t_next = inversion_schedule(1000, 50)
    assert t_next[:3] == [0, 20, 40] and t_next[-1] == 980
    assert t_eval[:3] == [-1, 0, 20] and t_eval[-1] == 960
    # the paper's kept steps (49, 45, ..., 0) are UNet calls at -1, 60, 160, ..., 960
    kept = [t_eval[49 - s] for s in (49, 45, 40, 35, 30, 25, 20, 15, 10, 5, 0)]
    assert kept == [-1, 60, 160, 260, 360, 460, 560, 660, 760, 860, 960]
    assert inversion_schedule(1000, 1) == ([-1], [0])
    with pytest.raises(ValueError, match=r'num_inversion_steps=0 must be in 1\.\.1000'):
        inversion_schedule(1000, 0)


def test_ddim_inversion_matches_a_hand_written_update(sd):
    """Two inversion steps of the tiny SD against DDIM written out: step 0 evaluates the UNet
    on the clean latent at t=-1 (alpha_bar 1), step 1 at t=0 on the result."""
    ext = HyperfeatureExtractor(sd_teacher(sd), num_inversion_steps=2, save_steps=[1, 0],
                                input_size=None, **SMALL)
    assert ext.feature_timesteps == [-1, 0]
    teacher = ext.teacher
    x = images(2, 32)
    latents = teacher.encode(x * 2 - 1)
    feats, traj = ext.ddim_inversion(latents, last_step=1)
    assert len(traj) == 3 and set(feats) == {0, 1}

    unet, ac = teacher.unet, teacher.noise_scheduler.alphas_cumprod.double()
    ids = teacher._parts.tokenizers[0]('', padding='max_length', max_length=8,
                                       return_tensors='pt').input_ids
    with torch.no_grad():
        text = teacher._parts.text_encoders[0](ids)[0].expand(2, -1, -1)
        eps0 = unet(latents, torch.tensor([-1, -1]), encoder_hidden_states=text).sample
        x1 = ac[0].sqrt().float() * latents + (1 - ac[0]).sqrt().float() * eps0
        recorded = {}
        hook = unet.get_submodule('up_blocks.1.resnets.1.conv2').register_forward_hook(
            lambda m, a, out: recorded.setdefault('f', out))
        eps1 = unet(x1, torch.tensor([0, 0]), encoder_hidden_states=text).sample
        hook.remove()
        x0_pred = (x1 - (1 - ac[0]).sqrt().float() * eps1) / ac[0].sqrt().float()
        x2 = ac[1000 // 2].sqrt().float() * x0_pred + (1 - ac[500]).sqrt().float() * eps1
    torch.testing.assert_close(traj[0], latents)
    torch.testing.assert_close(traj[1], x1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(traj[2], x2, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(feats[1]['up_blocks.1.resnets.1.conv2'], recorded['f'],
                               rtol=1e-4, atol=1e-4)
    # the extractor keeps save_steps [1, 0] = inversion steps [0, 1], in that order
    out = ext.teacher_features(x)
    assert [len(per_t) for per_t in out] == [4, 4]
    torch.testing.assert_close(out[1][3], feats[1]['up_blocks.1.resnets.1.conv2'])


def test_one_step_is_one_unet_call_on_the_clean_latent(sd):
    ext = HyperfeatureExtractor(sd_teacher(sd), num_inversion_steps=1, input_size=None, **SMALL)
    assert ext.save_steps == [0] and ext.feature_timesteps == [-1]
    calls = []
    hook = ext.teacher.unet.register_forward_pre_hook(lambda m, a: calls.append(a[1].tolist()))
    ext(images(2, 32))
    hook.remove()
    assert calls == [[-1, -1]]


# ------------------------------------------------------------------------ aggregation
def test_output_shape_and_mixing_weights(sd):
    ext = HyperfeatureExtractor(sd_teacher(sd), num_inversion_steps=4, save_steps=[3, 1],
                                input_size=24, **SMALL)
    calls = []
    hook = ext.teacher.unet.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape))
    out = ext(images(3, 40))
    hook.remove()
    assert calls == [(3, 4, 12, 12)] * 3  # 24 px through the VAE (x2); steps 0..2 run
    assert out.shape == (3, 32, 8, 8) and out.dtype == torch.float32
    assert ext.stride == 40 / 8
    table = ext.aggregation.mixing_table()
    assert table.shape == (2, 4)  # timesteps x layers
    torch.testing.assert_close(table.sum(), torch.tensor(1.0))
    with torch.no_grad():
        ext.aggregation.mixing_weights.copy_(torch.arange(8.))
    table = ext.aggregation.mixing_table()
    torch.testing.assert_close(table.sum(), torch.tensor(1.0))
    expected = torch.exp(torch.arange(8.)) / torch.exp(torch.arange(8.)).sum()
    torch.testing.assert_close(table.flatten(), expected)


def test_aggregation_is_the_weighted_sum_of_projections():
    agg = HyperfeatureAggregation([8, 16], num_timesteps=2, **SMALL)
    with torch.no_grad():
        agg.mixing_weights.copy_(torch.tensor([0., 1., 2., 3.]))
    gen = torch.Generator().manual_seed(0)
    feats = [[torch.randn(1, 8, 4, 4, generator=gen), torch.randn(1, 16, 8, 8, generator=gen)]
             for _ in range(2)]
    w = torch.softmax(torch.tensor([0., 1., 2., 3.]), 0)
    up = lambda f: F.interpolate(f, size=(8, 8), mode='bilinear', align_corners=False)  # noqa
    with torch.no_grad():
        expected = sum(w[t * 2 + l] * agg.projections[l](up(feats[t][l]))
                       for t in range(2) for l in range(2))
        torch.testing.assert_close(agg(feats), expected)
    with pytest.raises(ValueError, match='expects 2 timesteps x 2 layers of feature maps'):
        agg(feats[:1])
    with pytest.raises(ValueError, match='must be multiples of num_norm_groups=8'):
        HyperfeatureAggregation([8], 1, projection_dim=20, num_norm_groups=8)


def test_only_the_aggregation_trains_and_is_saved(sd):
    ext = HyperfeatureExtractor(sd_teacher(sd), num_inversion_steps=1, input_size=None, **SMALL)
    ext.train()
    trainable = {n for n, p in ext.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in ext.named_parameters()}
    assert trainable and all(n.startswith('aggregation.') for n in trainable)
    assert all(not p.requires_grad for net in ext.teacher.held_networks().values()
               for p in net.parameters())
    assert all(not m.training for m in ext.teacher.held_networks().values())
    keys = set(ext.state_dict())
    assert keys == {f'aggregation.{k}' for k in ext.aggregation.state_dict()}
    assert 'aggregation.mixing_weights' in keys
    n_params = sum(p.numel() for p in ext.parameters())
    assert n_params == sum(p.numel() for p in ext.aggregation.parameters())

    feats = ext(images(2, 32))
    # a CLIP-style symmetric loss on a few cells, as the training recipe
    src, trg = F.normalize(feats[0].flatten(1), dim=0), F.normalize(feats[1].flatten(1), dim=0)
    idx = torch.tensor([0, 9, 27])
    logits = src.T[idx] @ trg / 0.07
    loss = F.cross_entropy(logits, idx)
    loss.backward()
    assert ext.aggregation.mixing_weights.grad is not None
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in ext.aggregation.parameters())
    assert float(ext.aggregation.projections[0].reduce.weight.grad.abs().sum()) > 0
    assert all(p.grad is None for net in ext.teacher.held_networks().values()
               for p in net.parameters())
    # a state dict round trip reproduces the features exactly
    twin = HyperfeatureExtractor(sd_teacher(sd), num_inversion_steps=1, input_size=None, **SMALL)
    twin.load_state_dict(ext.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(twin(images(2, 32)), ext(images(2, 32)))


def test_forward_noise_mode_on_a_pixel_ddpm(ddpm):
    """The teacher's own modes: the features are the teacher's, timestep-major."""
    ext = HyperfeatureExtractor(dict(type='DiffusionTeacher', pretrained=ddpm, seed=0),
                                noise='forward', timesteps=[10, 200], input_size=16, **SMALL)
    assert ext.feature_timesteps == [10, 200]
    x = images(2, 16)
    feats = ext.teacher_features(x)
    ref = ext.teacher(x * 2 - 1)
    torch.testing.assert_close(feats[1][2], ref['up_blocks.1.resnets.0.conv2@200'])
    assert ext(x).shape == (2, 32, 8, 8)


@pytest.mark.parametrize('kwargs,match', [
    (dict(noise='forwards'), r"noise='forwards' is not one of \('ddim_inversion'"),
    (dict(noise='forward'), r"noise='forward' needs timesteps=\[\.\.\.\]"),
    (dict(num_inversion_steps=4, save_steps=[4]), r'save_steps=\[4\] must be distinct '
     r'inversion steps in 0\.\.3'),
    (dict(layers=['up_blocks.0.resnet.0.conv2']), r"Unknown layer 'up_blocks.0.resnet.0.conv2'"),
    (dict(input_size='natve'), r"input_size='natve': use 'native'"),
])
def test_bad_options_are_named(sd, kwargs, match):
    with pytest.raises(Exception, match=match):
        HyperfeatureExtractor(sd_teacher(sd), **SMALL, **kwargs)


# ------------------------------------------------------------------------ the config
def test_zero_shot_config_builds_and_predicts(sd, tmp_path):
    cfg = Config.fromfile(CONFIG)
    ext_cfg = cfg.model.extractor
    assert ext_cfg.type == 'HyperfeatureExtractor' and ext_cfg.noise == 'ddim_inversion'
    assert (ext_cfg.num_inversion_steps, list(ext_cfg.save_steps)) == (1, [0])
    assert (ext_cfg.projection_dim, ext_cfg.output_size, ext_cfg.input_size) == \
        (384, 64, 'native')
    assert ext_cfg.teacher.pretrained == 'stable-diffusion-v1-5/stable-diffusion-v1-5'
    assert cfg.test_evaluator.presets[0] == 'hyperfeatures'
    model_cfg = copy.deepcopy(cfg.model.to_dict())
    model_cfg['extractor']['teacher']['pretrained'] = sd
    model_cfg['extractor'].update(output_size=8)
    model = MODELS.build(model_cfg).eval()
    assert model.extractor.input_size == (16, 16)  # the tiny SD's native size (8 x VAE 2)
    assert set(model.state_dict()) == {f'extractor.aggregation.{k}' for k in
                                       model.extractor.aggregation.state_dict()}
    # the converted release (default prefix) is the config's load_from: it fits the model
    from safetensors.torch import load_file, save_file
    from common.io import check_checkpoint_fits
    from tools.convert import hyperfeatures_aggregation as tool
    assert cfg.load_from.endswith('aggregation_network_one-step.safetensors')
    save_file(reference_state(model.extractor.aggregation.in_channels, 1, 384),
              str(tmp_path / 'raw.safetensors'))
    assert _cli_run(tool, [str(tmp_path / 'raw.safetensors'), str(tmp_path / 'c.safetensors')]) == 0
    converted = load_file(str(tmp_path / 'c.safetensors'))
    report = check_checkpoint_fits(model, converted, 'c.safetensors')
    assert not report['missing'] and not report['unexpected'] and not report['mismatched']
    model.load_state_dict(converted, strict=True)
    dataset_cfg = cfg.test_dataloader.dataset.to_dict()
    pipeline = copy.deepcopy(dataset_cfg['pipeline'])
    resize = [t for t in pipeline if t['type'] == 'ResizePair']
    assert [(t['frame'], t['size']) for t in resize] == [('stretched', 224)]
    resize[0]['size'] = 32
    dataset_cfg.update(data_root=write_spair(str(tmp_path))['root'], pipeline=pipeline)
    item = DATASETS.build(dataset_cfg)[0]
    with torch.no_grad():
        out = model.test_step(pair_collate([item]))
    pred = np.asarray(out[0]['pred_kps'])
    assert pred.shape == np.asarray(item['data_samples']['trg_kps']).shape
    assert np.isfinite(pred).all()


# ------------------------------------------------------------------------ released weights
REF_CONVS = dict(conv1='reduce', conv2='conv', conv3='expand', shortcut='shortcut')


def reference_state(in_channels, num_timesteps, dim, seed=0):
    """A state dict under the reference's (detectron2-style) key names, random values."""
    gen = torch.Generator().manual_seed(seed)
    hidden = dim // 4
    state = {'mixing_weights': torch.randn(num_timesteps * len(in_channels), generator=gen)}
    for l, c in enumerate(in_channels):
        shapes = dict(conv1=(hidden, c, 1, 1), conv2=(hidden, hidden, 3, 3),
                      conv3=(dim, hidden, 1, 1))
        if c != dim:  # a projection shortcut only where the channels change
            shapes['shortcut'] = (dim, c, 1, 1)
        for conv, shape in shapes.items():
            state[f'bottleneck_layers.{l}.0.{conv}.weight'] = torch.randn(*shape, generator=gen)
            state[f'bottleneck_layers.{l}.0.{conv}.norm.weight'] = \
                1 + 0.1 * torch.randn(shape[0], generator=gen)
            state[f'bottleneck_layers.{l}.0.{conv}.norm.bias'] = \
                0.1 * torch.randn(shape[0], generator=gen)
    return state


def reference_block(state, l, x, groups):
    """The reference's bottleneck block, written out with functional ops on its own keys."""
    p = f'bottleneck_layers.{l}.0.'

    def conv_norm(name, inp, padding=0):
        out = F.conv2d(inp, state[p + name + '.weight'], padding=padding)
        return F.group_norm(out, groups, state[p + name + '.norm.weight'],
                            state[p + name + '.norm.bias'])

    out = F.relu(conv_norm('conv1', x))
    out = F.relu(conv_norm('conv2', out, padding=1))
    skip = conv_norm('shortcut', x) if p + 'shortcut.weight' in state else x
    return F.relu(conv_norm('conv3', out) + skip)


def test_reference_keys_convert_and_compute_the_reference_block():
    from correspondence.models.hyperfeatures import convert_reference_state_dict
    ref = reference_state([8, 32], 3, 32)  # layer 1: identity shortcut
    renamed, info = convert_reference_state_dict(
        {f'aggregation_network.{k}': v for k, v in ref.items()})
    assert info == dict(in_channels=[8, 32], num_timesteps=3, projection_dim=32)
    assert renamed['projections.1.reduce_norm.bias'] is ref['bottleneck_layers.1.0.conv1.norm.bias']
    agg = HyperfeatureAggregation(**info, output_size=4, num_norm_groups=8)
    agg.load_state_dict(renamed, strict=True)
    gen = torch.Generator().manual_seed(1)
    feats = [[torch.randn(2, 8, 4, 4, generator=gen), torch.randn(2, 32, 4, 4, generator=gen)]
             for _ in range(3)]
    w = torch.softmax(ref['mixing_weights'], 0)
    with torch.no_grad():
        expected = sum(w[t * 2 + l] * reference_block(ref, l, feats[t][l], 8)
                       for t in range(3) for l in range(2))
        torch.testing.assert_close(agg(feats), expected, rtol=1e-5, atol=1e-5)
    bad = dict(ref, **{'bottleneck_layers.0.1.conv1.weight': torch.zeros(1)})
    with pytest.raises(ValueError, match=r"keys \['bottleneck_layers.0.1.conv1.weight'\] are "
                       r"not the reference's"):
        convert_reference_state_dict(bad)


def test_converter_tool_writes_model_keys(sd, tmp_path):
    from safetensors.torch import load_file, save_file
    from tools.convert import hyperfeatures_aggregation as tool
    ext = HyperfeatureExtractor(sd_teacher(sd), num_inversion_steps=1, input_size=None, **SMALL)
    raw = tmp_path / 'raw.safetensors'  # as tools/convert/legacy_checkpoint.py writes it
    save_file(reference_state(ext.aggregation.in_channels, 1, 32, seed=3), str(raw))
    out = tmp_path / 'agg.safetensors'
    code = _cli_run(tool, [str(raw), str(out), '--prefix', 'aggregation.'])
    assert code == 0 and out.is_file()
    ext.load_state_dict(load_file(str(out)), strict=True)
    torch.testing.assert_close(ext.aggregation.projections[2].expand_norm.bias,
                               load_file(str(raw))['bottleneck_layers.2.0.conv3.norm.bias'])
    assert _cli_run(tool, [str(raw), str(out)]) == 2  # exists, no --overwrite
    save_file({'weight': torch.zeros(2)}, str(tmp_path / 'other.safetensors'))
    other, x = str(tmp_path / 'other.safetensors'), str(tmp_path / 'x.safetensors')
    assert _cli_run(tool, [other, x]) == 1
    assert not (tmp_path / 'x.safetensors').exists()


def _cli_run(tool, argv):
    import sys
    if osp.join(REPO_ROOT, 'tools') not in sys.path:
        sys.path.append(osp.join(REPO_ROOT, 'tools'))
    import _cli
    try:
        return _cli.run_cli(tool.PROG, tool.main, argv)
    except SystemExit as exit_:
        return exit_.code


def test_sd15_topology_gives_the_papers_twelve_layers():
    """On SD 1.5's UNet topology (diffusers' default UNet2DConditionModel, meta device: no
    weights) the default layers are the 12 decoder ResnetBlock2D conv2s with 1280 x 6, 640 x 3,
    320 x 3 channels, and the full model mixes 11 x 12 = 132 maps."""
    from diffusers import UNet2DConditionModel
    with torch.device('meta'):
        unet = UNet2DConditionModel()
        layers = decoder_resnet_layers(unet)
        assert layers == [f'up_blocks.{i}.resnets.{j}.conv2' for i in range(4) for j in range(3)]
        channels = [unet.get_submodule(n).out_channels for n in layers]
        assert channels == [1280] * 6 + [640] * 3 + [320] * 3
        agg = HyperfeatureAggregation(channels, num_timesteps=11)
    assert agg.mixing_weights.numel() == 132
