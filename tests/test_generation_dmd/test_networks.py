"""EDM networks: NVlabs/edm state_dict names, preconditioner formulas, layers, save/load round trip.

All networks are tiny (8x8 images, 16-64 channels) and run on the CPU.
"""
import json
import math
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from generation_dmd.networks import (DhariwalUNet, EDMLoadError, EDMPrecond, SongUNet, VEPrecond,
                                     VPPrecond, load_edm, save_edm)
from generation_dmd.networks.layers import Conv2d, PositionalEmbedding

TINY_SONG = dict(model_channels=16, channel_mult=[1], num_blocks=1, attn_resolutions=[8],
                 dropout=0.0)


def scramble(net, seed=0):
    """Give every parameter a random O(1) value (EDM zero-initialises output layers)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return net


# --- state_dict names ---------------------------------------------------------------------------
# EDM's naming rules (training/networks.py, SongUNet):
# * mapping: map_noise (positional: no tensors; fourier: buffer ``freqs``), map_label (Linear with
#   bias, only if label_dim), map_augment (Linear WITHOUT bias, only if augment_dim), map_layer0,
#   map_layer1 (Linear with bias).
# * encoder, per level (res = img_resolution >> level): level 0 starts with ``enc.RxR_conv``
#   (3x3 conv); later levels with ``enc.RxR_down`` (a UNetBlock). Then ``enc.RxR_block{i}`` for
#   i < num_blocks.
# * decoder, levels in reverse: the deepest level starts with ``dec.RxR_in0`` (attention always)
#   and ``dec.RxR_in1`` (no attention), others with ``dec.RxR_up``; then ``dec.RxR_block{i}`` for
#   i <= num_blocks, attention only on the last one (i == num_blocks) at attn_resolutions; level 0
#   ends with ``dec.RxR_aux_norm`` (GroupNorm) and ``dec.RxR_aux_conv`` (3x3 conv to the image).
# * a UNetBlock has norm0, conv0, affine, norm1, conv1 (weight+bias each); ``skip`` (1x1 conv,
#   weight+bias) when channels change or it resamples; with attention norm2, qkv, proj.
#   A resampling conv also holds the buffer ``resample_filter``.
BLOCK = ['norm0', 'conv0', 'affine', 'norm1', 'conv1']
ATTN = ['norm2', 'qkv', 'proj']


def _wb(*modules):
    return [f'{m}.{t}' for m in modules for t in ('weight', 'bias')]


def _block(name, skip=False, attn=False):
    parts = BLOCK + (['skip'] if skip else []) + (ATTN if attn else [])
    return _wb(*[f'{name}.{p}' for p in parts])


def test_song_unet_state_dict_keys_follow_edm_naming():
    net = SongUNet(img_resolution=8, in_channels=3, out_channels=3, label_dim=10, augment_dim=9,
                   **TINY_SONG)
    # 16 channels everywhere: enc blocks need no skip; dec blocks take 16 + 16 skip channels.
    expected = (
        _wb('map_label', 'map_layer0', 'map_layer1') + ['map_augment.weight']
        + _wb('enc.8x8_conv') + _block('enc.8x8_block0', attn=True)
        + _block('dec.8x8_in0', attn=True) + _block('dec.8x8_in1')
        + _block('dec.8x8_block0', skip=True) + _block('dec.8x8_block1', skip=True, attn=True)
        + _wb('dec.8x8_aux_norm', 'dec.8x8_aux_conv'))
    assert sorted(net.state_dict()) == sorted(expected)
    # the entries run in EDM's order
    assert list(net.enc) == ['8x8_conv', '8x8_block0']
    assert list(net.dec) == ['8x8_in0', '8x8_in1', '8x8_block0', '8x8_block1', '8x8_aux_norm',
                             '8x8_aux_conv']
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes['map_label.weight'] == (16, 10)          # noise_channels = 16 * 1
    assert shapes['map_augment.weight'] == (16, 9)
    assert shapes['map_layer1.weight'] == (64, 64)         # emb = 16 * channel_mult_emb 4
    assert shapes['enc.8x8_block0.affine.weight'] == (16, 64)  # no adaptive scale: out * 1
    assert shapes['enc.8x8_block0.qkv.weight'] == (48, 16, 1, 1)
    assert shapes['dec.8x8_block0.conv0.weight'] == (16, 32, 3, 3)
    assert shapes['dec.8x8_aux_conv.weight'] == (3, 16, 3, 3)


def test_edm_precond_keys_are_the_song_unet_keys_under_model():
    pre = EDMPrecond(8, 3, label_dim=10, model_type='SongUNet', **TINY_SONG)
    raw = SongUNet(8, 3, 3, label_dim=10, **TINY_SONG)
    assert sorted(pre.state_dict()) == sorted('model.' + k for k in raw.state_dict())


def test_two_level_ncsnpp_keys_resampling_buffers_and_aux_paths():
    net = SongUNet(8, 3, 3, model_channels=16, channel_mult=[1, 2], num_blocks=1,
                   attn_resolutions=[], embedding_type='fourier', channel_mult_noise=2,
                   encoder_type='residual', decoder_type='skip', resample_filter=[1, 3, 3, 1])
    sd = net.state_dict()
    assert list(net.enc) == ['8x8_conv', '8x8_block0', '4x4_down', '4x4_aux_residual', '4x4_block0']
    assert list(net.dec) == ['4x4_in0', '4x4_in1', '4x4_block0', '4x4_block1', '4x4_aux_norm',
                             '4x4_aux_conv', '8x8_up', '8x8_block0', '8x8_block1',
                             '8x8_aux_up', '8x8_aux_norm', '8x8_aux_conv']
    assert sd['map_noise.freqs'].shape == (16, )  # fourier: 16 * 2 channels -> 16 frequencies
    taps = torch.tensor([1., 3., 3., 1.])
    kernel = torch.outer(taps, taps) / 64
    for key in ('enc.4x4_down.conv0.resample_filter', 'enc.4x4_down.skip.resample_filter',
                'enc.4x4_aux_residual.resample_filter', 'dec.8x8_up.conv0.resample_filter',
                'dec.8x8_aux_up.resample_filter'):
        assert torch.equal(sd[key], kernel[None, None]), key
    # resample-only convs (kernel 0) hold no weight/bias, as in EDM
    assert [k for k in sd if k.startswith('dec.8x8_aux_up.')] == ['dec.8x8_aux_up.resample_filter']
    # the 4x4 block goes 16 -> 32 channels; the aux residual conv maps the image 3 -> 16
    assert sd['enc.4x4_block0.skip.weight'].shape == (32, 16, 1, 1)
    assert sd['enc.4x4_aux_residual.weight'].shape == (16, 3, 3, 3)
    assert not any('resample_filter' in k for k in sd if '_block' in k or '_in' in k)


def test_skip_encoder_keys():
    net = SongUNet(8, 3, 3, model_channels=16, channel_mult=[1, 1], num_blocks=1,
                   attn_resolutions=[], encoder_type='skip')
    sd = net.state_dict()
    assert sorted(k for k in sd if 'aux_' in k and k.startswith('enc.')) == [
        'enc.4x4_aux_down.resample_filter', 'enc.4x4_aux_skip.bias', 'enc.4x4_aux_skip.weight']


def test_dhariwal_unet_keys():
    net = DhariwalUNet(8, 3, 3, label_dim=10, augment_dim=9, model_channels=64, channel_mult=[1],
                       num_blocks=1, attn_resolutions=[8], dropout=0.0)
    expected = (
        ['map_augment.weight', 'map_label.weight'] + _wb('map_layer0', 'map_layer1')
        + _wb('enc.8x8_conv') + _block('enc.8x8_block0', attn=True)
        + _block('dec.8x8_in0', attn=True) + _block('dec.8x8_in1')  # in1: never attention
        + _block('dec.8x8_block0', skip=True, attn=True)  # ADM: attention on every dec block
        + _block('dec.8x8_block1', skip=True, attn=True) + _wb('out_norm', 'out_conv'))
    sd = net.state_dict()
    assert sorted(sd) == sorted(expected)
    assert sd['enc.8x8_block0.affine.weight'].shape == (128, 256)  # adaptive scale: 2 * out
    assert sd['map_label.weight'].shape == (256, 10)               # added after the MLP


def test_dhariwal_with_fewer_channels_than_a_head_has_no_attention_like_edm():
    net = DhariwalUNet(8, 3, 3, model_channels=16, channel_mult=[1], num_blocks=1,
                       attn_resolutions=[8])
    assert not any('qkv' in k for k in net.state_dict())


# --- layers against independent computations -------------------------------------------------

def test_resampling_with_box_filter_is_average_pooling_and_nearest_upsampling():
    x = torch.randn(2, 5, 8, 8)
    down = Conv2d(5, 5, kernel=0, down=True, resample_filter=[1, 1])
    torch.testing.assert_close(down(x), F.avg_pool2d(x, 2))
    up = Conv2d(5, 5, kernel=0, up=True, resample_filter=[1, 1])
    torch.testing.assert_close(up(x), F.interpolate(x, scale_factor=2, mode='nearest'))


def test_positional_embedding_by_hand():
    emb = PositionalEmbedding(4, endpoint=True)(torch.tensor([2.0]))
    # frequencies 10000^-(i / (2 - 1)) for i = 0, 1 -> 1, 1e-4; layout [cos..., sin...]
    expected = torch.tensor([[math.cos(2), math.cos(2e-4), math.sin(2), math.sin(2e-4)]])
    torch.testing.assert_close(emb, expected)
    emb = PositionalEmbedding(4, endpoint=False)(torch.tensor([3.0]))
    expected = torch.tensor([[math.cos(3), math.cos(0.03), math.sin(3), math.sin(0.03)]])
    torch.testing.assert_close(emb, expected)


def test_attention_reads_qkv_channels_interleaved_per_head():
    from generation_dmd.networks.layers import UNetBlock
    torch.manual_seed(0)
    block = scramble(UNetBlock(8, 8, 4, attention=True, num_heads=2, adaptive_scale=False), 1)
    x, emb = torch.randn(2, 8, 3, 3), torch.randn(2, 4)
    block.eval()
    got = block(x, emb)
    # Independent computation: residual part, then attention with channel c of head h for
    # q/k/v at qkv channel (h * 4 + c) * 3 + {0, 1, 2}.
    h = block.conv0(F.silu(block.norm0(x)))
    h = F.silu(block.norm1(h + block.affine(emb)[:, :, None, None]))
    h = (block.conv1(h) + block.skip(x) if block.skip else block.conv1(h) + x) * block.skip_scale
    qkv = block.qkv(block.norm2(h)).flatten(2)                     # (2, 24, 9)
    heads = []
    for head in range(2):
        idx = [(head * 4 + c) * 3 for c in range(4)]
        q, k, v = (qkv[:, [i + j for i in idx]] for j in range(3))
        attn = torch.softmax(q.transpose(1, 2) @ k / 2.0, dim=-1)  # sqrt(4 channels) = 2
        heads.append(v @ attn.transpose(1, 2))
    a = torch.cat(heads, dim=1).reshape(2, 8, 3, 3)
    expected = (block.proj(a) + h) * block.skip_scale
    torch.testing.assert_close(got, expected)


# --- shapes, conditioning -------------------------------------------------------------------

@pytest.mark.parametrize('variant', [
    dict(),  # DDPM++
    dict(embedding_type='fourier', channel_mult_noise=2, encoder_type='residual',
         resample_filter=[1, 3, 3, 1]),  # NCSN++
    dict(encoder_type='skip', decoder_type='skip'),
])
def test_song_unet_variants_keep_the_image_shape(variant):
    torch.manual_seed(0)
    net = SongUNet(8, 3, 2, model_channels=16, channel_mult=[1, 2], num_blocks=1,
                   attn_resolutions=[4], dropout=0.0, **variant)
    out = net(torch.randn(2, 3, 8, 8), torch.tensor([0.1, -0.3]))
    assert out.shape == (2, 2, 8, 8) and torch.isfinite(out).all()


def test_dhariwal_unet_shape():
    net = DhariwalUNet(8, 3, 3, model_channels=64, channel_mult=[1, 1], num_blocks=1,
                       attn_resolutions=[4], dropout=0.0)
    assert net(torch.randn(2, 3, 8, 8), torch.tensor([0.1, 0.2])).shape == (2, 3, 8, 8)


@pytest.mark.parametrize('model_type,kwargs', [
    ('SongUNet', TINY_SONG),
    ('DhariwalUNet', dict(model_channels=16, channel_mult=[1], num_blocks=1, attn_resolutions=[],
                          dropout=0.0)),
])
def test_class_and_augment_labels_change_the_output(model_type, kwargs):
    torch.manual_seed(0)
    pre = scramble(EDMPrecond(8, 3, label_dim=4, augment_dim=2, model_type=model_type, **kwargs))
    x, sigma = torch.randn(2, 3, 8, 8), torch.tensor([1.0, 1.0])
    eye = torch.eye(4)
    a = pre(x, sigma, eye[[0, 1]])
    b = pre(x, sigma, eye[[2, 3]])
    assert (a - b).abs().max() > 1e-3
    # the same label gives the same output; labels act per sample
    torch.testing.assert_close(pre(x, sigma, eye[[0, 3]])[0], a[0])
    aug = pre(x, sigma, eye[[0, 1]], augment_labels=torch.ones(2, 2))
    assert (aug - a).abs().max() > 1e-3


def test_label_errors():
    pre = EDMPrecond(8, 3, label_dim=4, model_type='SongUNet', **TINY_SONG)
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r'class_labels of shape \(2, 3\): expected one-hot'):
        pre(x, 1.0, torch.zeros(2, 3))
    uncond = EDMPrecond(8, 3, model_type='SongUNet', **TINY_SONG)
    with pytest.raises(ValueError, match='unconditional \\(label_dim=0\\) but was given class'):
        uncond(x, 1.0, torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r'got x of shape \(2, 1, 8, 8\): expected \(N, 3, H, W\)'):
        uncond(torch.zeros(2, 1, 8, 8), 1.0)


def test_configuration_errors():
    with pytest.raises(ValueError, match="embedding_type='sinusoidal'.*expected one of "
                                         "'positional', 'fourier'"):
        SongUNet(8, 3, 3, embedding_type='sinusoidal', **TINY_SONG)
    with pytest.raises(ValueError, match="decoder_type='residual'"):
        SongUNet(8, 3, 3, decoder_type='residual', **TINY_SONG)
    with pytest.raises(ValueError, match='img_resolution=6 with 3 resolution levels.*of 4'):
        SongUNet(6, 3, 3, model_channels=16, channel_mult=[1, 1, 1])
    with pytest.raises(ValueError, match="model_type='UNet2DModel'.*expected one of DhariwalUNet, "
                                         'SongUNet'):
        EDMPrecond(8, 3, model_type='UNet2DModel')
    with pytest.raises(ValueError, match='passes num_res_blocks to SongUNet, which does not accept '
                                         'it'):
        EDMPrecond(8, 3, model_type='SongUNet', num_res_blocks=2)


# --- preconditioning formulas ---------------------------------------------------------------

class Recorder(torch.nn.Module):
    """A stand-in raw network: records its inputs, returns 3 everywhere."""

    def forward(self, x, noise_labels, class_labels=None):
        self.seen = (x.clone(), noise_labels.clone(), class_labels)
        return torch.full_like(x, 3.0)


def _run(pre, sigma, x):
    pre.model = Recorder()
    out = pre(x, torch.tensor([sigma]))
    x_in, c_noise, _ = pre.model.seen
    return out, x_in, c_noise


def test_edm_preconditioning_by_hand():
    x = torch.full((1, 3, 8, 8), 2.0)
    out, x_in, c_noise = _run(EDMPrecond(8, 3, model_type='SongUNet', **TINY_SONG), 2.0, x)
    # sigma 2, sigma_data 0.5: sigma^2 + sd^2 = 4.25
    c_skip, c_out, c_in = 0.25 / 4.25, 1.0 / math.sqrt(4.25), 1 / math.sqrt(4.25)
    torch.testing.assert_close(x_in, torch.full_like(x, 2.0 * c_in))
    torch.testing.assert_close(c_noise, torch.tensor([math.log(2.0) / 4]))
    torch.testing.assert_close(out, torch.full_like(x, c_skip * 2.0 + c_out * 3.0))
    assert abs(c_skip * 2 + c_out * 3 - 1.572861) < 1e-6  # 0.117647 + 1.455214


def test_vp_preconditioning_by_hand():
    pre = VPPrecond(8, 3, **TINY_SONG)
    x = torch.full((1, 3, 8, 8), 2.0)
    out, x_in, c_noise = _run(pre, 1.0, x)
    # t(sigma=1): 0.5 * 19.9 t^2 + 0.1 t = ln 2  ->  t = (sqrt(0.01 + 39.8 ln 2) - 0.1) / 19.9
    t = (math.sqrt(0.01 + 39.8 * math.log(2)) - 0.1) / 19.9
    torch.testing.assert_close(c_noise, torch.tensor([999 * t]))
    assert abs(999 * t - 258.71) < 0.01
    torch.testing.assert_close(x_in, torch.full_like(x, 2.0 / math.sqrt(2)))
    torch.testing.assert_close(out, torch.full_like(x, 2.0 - 1.0 * 3.0))  # c_skip 1, c_out -1
    # computed in float64 (EDM's float32 gives 0.0009765625 = 2^-10 here)
    assert pre.sigma_min == pytest.approx(math.sqrt(math.expm1(0.5 * 19.9e-10 + 1e-6)), rel=1e-9)
    assert pre.sigma_max == pytest.approx(math.sqrt(math.exp(9.95 + 0.1) - 1), rel=1e-6)
    sigmas = torch.tensor([0.01, 0.5, 3.0, 80.0], dtype=torch.float64)
    torch.testing.assert_close(pre.sigma(pre.sigma_inv(sigmas)), sigmas)


def test_ve_preconditioning_by_hand():
    x = torch.full((1, 3, 8, 8), 2.0)
    out, x_in, c_noise = _run(VEPrecond(8, 3, **TINY_SONG), 6.0, x)
    torch.testing.assert_close(c_noise, torch.tensor([math.log(3.0)]))
    torch.testing.assert_close(x_in, x)
    torch.testing.assert_close(out, torch.full_like(x, 2.0 + 6.0 * 3.0))


def test_scalar_sigma_broadcasts_and_round_sigma_is_identity():
    pre = EDMPrecond(8, 3, model_type='SongUNet', **TINY_SONG)
    pre.model = Recorder()
    pre(torch.zeros(3, 3, 8, 8), 0.5)
    torch.testing.assert_close(pre.model.seen[1], torch.full((3, ), math.log(0.5) / 4))
    assert torch.equal(pre.round_sigma(torch.tensor([0.3, 7.0])), torch.tensor([0.3, 7.0]))


def test_fp16_only_on_cuda_and_force_fp32():
    pre = EDMPrecond(8, 3, use_fp16=True, model_type='SongUNet', **TINY_SONG)
    cuda = SimpleNamespace(device=torch.device('cuda', 0))
    assert pre.model_dtype(cuda) == torch.float16
    assert pre.model_dtype(cuda, force_fp32=True) == torch.float32
    assert pre.model_dtype(torch.zeros(1)) == torch.float32  # CPU: always float32, as EDM
    assert EDMPrecond(8, 3, model_type='SongUNet', **TINY_SONG).model_dtype(cuda) == torch.float32
    pre.model = Recorder()
    out = pre(torch.zeros(1, 3, 8, 8, dtype=torch.float64), 1.0)
    assert pre.model.seen[0].dtype == torch.float32 and out.dtype == torch.float32


def test_raw_network_runs_in_the_input_dtype():
    torch.manual_seed(0)
    net = scramble(SongUNet(8, 3, 3, **TINY_SONG)).to(torch.float64)
    x, noise = torch.randn(2, 3, 8, 8), torch.tensor([0.1, 0.2])
    out64 = net(x.double(), noise.double())
    assert out64.dtype == torch.float64
    out32 = net.float()(x, noise)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32, out64.float(), rtol=1e-4, atol=1e-4)


# --- save / load ----------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    pre = scramble(EDMPrecond(8, 3, label_dim=4, augment_dim=2, model_type='SongUNet',
                              embedding_type='fourier', channel_mult_noise=2,
                              **TINY_SONG)).eval()
    folder = save_edm(pre, tmp_path / 'net', metadata={'source': 'unit test'})
    cfg = json.loads((tmp_path / 'net' / 'config.json').read_text())
    assert cfg['class_name'] == 'EDMPrecond'
    assert cfg['init_kwargs']['model_type'] == 'SongUNet'
    assert cfg['init_kwargs']['channel_mult'] == [1] and cfg['init_kwargs']['label_dim'] == 4
    loaded = load_edm(folder)
    assert type(loaded) is EDMPrecond and not loaded.training
    assert loaded.state_dict().keys() == pre.state_dict().keys()
    for k, v in pre.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x, sigma, labels = torch.randn(2, 3, 8, 8), torch.tensor([0.3, 5.0]), torch.eye(4)[:2]
    torch.testing.assert_close(loaded(x, sigma, labels), pre(x, sigma, labels), rtol=0, atol=0)
    from safetensors import safe_open
    with safe_open(osp.join(folder, 'model.safetensors'), 'pt') as f:
        assert f.metadata() == {'source': 'unit test'}


def test_load_converter_style_config_with_extra_entries(tmp_path):
    pre = VPPrecond(8, 3, **TINY_SONG)
    save_edm(pre, tmp_path / 'net')
    path = tmp_path / 'net' / 'config.json'
    cfg = json.loads(path.read_text())
    cfg.update(source='converted from x.pkl', pickle_key='ema', init_args=[],
               model={'class_name': 'SongUNet', 'init_kwargs': {}})
    path.write_text(json.dumps(cfg))
    assert type(load_edm(tmp_path / 'net')) is VPPrecond


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='EDM network folder .*missing.* does not exist'):
        load_edm(tmp_path / 'missing')
    folder = tmp_path / 'net'
    save_edm(EDMPrecond(8, 3, model_type='SongUNet', **TINY_SONG), folder)
    cfg_path = folder / 'config.json'
    good = json.loads(cfg_path.read_text())

    cfg_path.write_text(json.dumps(dict(good, class_name='torch.nn.Linear')))
    with pytest.raises(EDMLoadError, match=r"class_name='torch.nn.Linear'.*expected one of "
                                           'DhariwalUNet, EDMPrecond, SongUNet, VEPrecond, '
                                           'VPPrecond'):
        load_edm(folder)

    cfg_path.write_text(json.dumps(dict(good, init_kwargs=dict(good['init_kwargs'], num_blocks=2))))
    with pytest.raises(EDMLoadError, match=r'weights the network needs are missing '
                                           r'\(model\.dec\.8x8_block2\.affine\.bias, '):
        load_edm(folder)

    cfg_path.write_text(json.dumps(dict(good, init_kwargs=dict(good['init_kwargs'],
                                                               model_channels=32))))
    with pytest.raises(EDMLoadError, match=r"another shape \(model\.dec\.8x8_aux_conv\.weight: "
                                           r'file \(3, 16, 3, 3\) vs network \(3, 32, 3, 3\)'):
        load_edm(folder)

    cfg_path.write_text(json.dumps(dict(good, init_kwargs=dict(good['init_kwargs'], depth=3))))
    with pytest.raises(EDMLoadError, match='could not build EDMPrecond: EDMPrecond passes depth '
                                           'to SongUNet'):
        load_edm(folder)

    cfg_path.write_text('{"class_name": "EDMPrecond"')
    with pytest.raises(EDMLoadError, match='could not be read as JSON'):
        load_edm(folder)

    cfg_path.write_text(json.dumps(good))
    (folder / 'model.safetensors').write_bytes(b'not a safetensors file')
    with pytest.raises(EDMLoadError, match='could not be read as a safetensors file'):
        load_edm(folder)
    (folder / 'model.safetensors').unlink()
    with pytest.raises(FileNotFoundError, match='needs its weights in model.safetensors'):
        load_edm(folder)
    cfg_path.unlink()
    with pytest.raises(FileNotFoundError, match='needs config.json'):
        load_edm(folder)


def test_unexpected_keys_are_reported(tmp_path):
    from safetensors.torch import save_file
    folder = tmp_path / 'net'
    pre = EDMPrecond(8, 3, model_type='SongUNet', **TINY_SONG)
    save_edm(pre, folder)
    sd = dict(pre.state_dict(), **{'model.extra.weight': torch.zeros(1)})
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / 'model.safetensors'))
    with pytest.raises(EDMLoadError, match=r'1 weights are not in the network '
                                           r'\(model\.extra\.weight\)'):
        load_edm(folder)


def test_registered_in_mmengine_models(tmp_path):
    from mmengine.registry import MODELS
    net = MODELS.build(dict(type='EDMPrecond', img_resolution=8, img_channels=3,
                            model_type='SongUNet', **TINY_SONG))
    assert type(net) is EDMPrecond
    save_edm(net, tmp_path / 'net')
    assert type(MODELS.build(dict(type='load_edm', folder=str(tmp_path / 'net')))) is EDMPrecond
    for name in ('SongUNet', 'DhariwalUNet', 'VPPrecond', 'VEPrecond'):
        assert MODELS.get(name) is not None


def test_save_edm_refuses_a_bare_network(tmp_path):
    with pytest.raises(TypeError, match='save_edm got a SongUNet: expected one of EDMPrecond'):
        save_edm(SongUNet(8, 3, 3, **TINY_SONG), tmp_path / 'net')
    assert not (tmp_path / 'net').exists()
