"""segmentation/pixel_features: ADM block paths, the pixel-feature extractor, the native store and
the pixel sampler, on a tiny converted guided-diffusion ADM.

The oracle for block outputs and for the whole feature pipeline (q_sample with one shared noise,
hooks on ``output_blocks``, bilinear ``F.interpolate``) is the independent guided-diffusion
stand-in of tests/helpers/guided_diffusion_reference.py with the betas computed by hand.
"""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common.teachers.convert import (convert_guided_diffusion,  # noqa: E402
                                     ddpm_scheduler_from_flags, save_pipeline_atomically,
                                     unet2d_config_from_flags)
from segmentation.pixel_features import (AdmBlockError, NativeFeatureStore,  # noqa: E402
                                         PixelFeatureError, PixelFeatureExtractor, PixelSampler,
                                         adm_feature_dim, adm_output_block_path,
                                         adm_output_block_shape, memory_report,
                                         num_output_blocks, sample_pixels, upsampled_chunks)
from tests.helpers.guided_diffusion_reference import reference_unet_from_flags  # noqa: E402

# 3 levels (32, 16, 8 px), attention at 16 px, ResBlock up/down samplers as the 256-px ADM.
TINY = dict(image_size=32, num_channels=32, channel_mult='1,1,2', num_res_blocks=1,
            attention_resolutions='16', num_head_channels=16, learn_sigma=True,
            resblock_updown=True, use_scale_shift_norm=True)
TINY_CONV = dict(TINY, resblock_updown=False)  # conv upsamplers
# ddpm-segmentation's 256-px ADM (LSUN / FFHQ)
ADM256 = dict(attention_resolutions='32,16,8', class_cond=False, image_size=256,
              learn_sigma=True, num_channels=256, num_head_channels=64, num_res_blocks=2,
              resblock_updown=True, use_scale_shift_norm=True)
# output_blocks of TINY: 0, 1 (+ upsampler 8->16 px), 2, 3 (attention + upsampler 16->32), 4, 5
BLOCKS = (1, 3, 5)
STEPS = (50, 150)
S = 32


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reference_model(flags, seed=0):
    """The guided-diffusion oracle with random weights (GroupNorm affines perturbed too)."""
    torch.manual_seed(seed)
    model = reference_unet_from_flags(**flags).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.copy_(1 + 0.2 * torch.randn_like(m.weight))
                m.bias.copy_(0.2 * torch.randn_like(m.bias))
    return model


@pytest.fixture(scope='module')
def adm(tmp_path_factory):
    """The tiny ADM: the oracle and its converted DDPMPipeline folder."""
    folder = tmp_path_factory.mktemp('adm') / 'tiny_adm'
    reference = reference_model(TINY)
    unet = convert_guided_diffusion(reference.state_dict(), TINY)
    save_pipeline_atomically(unet, ddpm_scheduler_from_flags(1000, 'linear', learn_sigma=True),
                             str(folder))
    return reference, str(folder)


@pytest.fixture(scope='module')
def extractor(adm):
    return PixelFeatureExtractor(dict(pretrained=adm[1]), blocks=BLOCKS, steps=STEPS, seed=0,
                                 image_size=S)


def images(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, S, S, generator=g) * 2 - 1


def linear_alphas_cumprod(steps=1000):
    """guided-diffusion's linear schedule by hand (float64)."""
    betas = np.linspace(1e-4, 0.02, steps, dtype=np.float64)
    return np.cumprod(1.0 - betas)


def record(module_by_name, run):
    out, handles = {}, []
    for name, module in module_by_name.items():
        handles.append(module.register_forward_hook(
            lambda m, a, o, name=name: out.__setitem__(name, o[0] if isinstance(o, tuple) else o)))
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return out


# ------------------------------------------------------------------------------ adm_blocks
@pytest.mark.parametrize('flags', [TINY, TINY_CONV], ids=['resblock_updown', 'conv_updown'])
def test_hooked_diffusers_module_equals_reference_output_block(flags):
    reference = reference_model(flags)
    unet = convert_guided_diffusion(reference.state_dict(), flags)
    n = num_output_blocks(flags)
    assert n == len(reference.output_blocks) == 6 == num_output_blocks(unet.config)
    paths = [adm_output_block_path(flags, i) for i in range(n)]
    # the converter's module_pairs and the UNet2DModel layout agree
    assert paths == [adm_output_block_path(unet.config, i) for i in range(n)]
    assert paths == [adm_output_block_path(unet, i) for i in range(n)]
    up = 'up_blocks.0.upsamplers.0'
    assert paths[:4] == ['up_blocks.0.resnets.0', up, 'up_blocks.1.attentions.0',
                         'up_blocks.1.upsamplers.0']
    modules = dict(unet.named_modules())
    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(2, 3, S, S, generator=g), torch.tensor([10, 700])
    want = record({str(i): reference.output_blocks[i] for i in range(n)}, lambda: reference(x, t))
    got = record({str(i): modules[p] for i, p in enumerate(paths)}, lambda: unet(x, t))
    for i in range(n):
        assert got[str(i)].shape == want[str(i)].shape, i
        assert torch.allclose(got[str(i)], want[str(i)], atol=1e-5, rtol=1e-4), \
            (i, (got[str(i)] - want[str(i)]).abs().max())
        assert tuple(want[str(i)].shape[1:3]) == adm_output_block_shape(flags, i)


def test_adm256_block_shapes_on_meta_device():
    """ddpm-segmentation's blocks 5, 6, 7, 8, 12 of the 256-px ADM, hooked during a forward on the
    meta device (no memory, no weights)."""
    from diffusers import UNet2DModel
    with torch.device('meta'):
        unet = UNet2DModel(**unet2d_config_from_flags(**ADM256))
        x = torch.empty(1, 3, 256, 256)
        t = torch.tensor([50])
    blocks = (5, 6, 7, 8, 12)
    modules = dict(unet.named_modules())
    paths = [adm_output_block_path(ADM256, b) for b in blocks]
    assert paths == ['up_blocks.1.upsamplers.0', 'up_blocks.2.attentions.0',
                     'up_blocks.2.attentions.1', 'up_blocks.2.upsamplers.0',
                     'up_blocks.4.resnets.0']
    out = record({p: modules[p] for p in paths}, lambda: unet(x, t))
    shapes = [tuple(out[p].shape) for p in paths]
    assert shapes == [(1, 1024, 32, 32), (1, 512, 32, 32), (1, 512, 32, 32), (1, 512, 64, 64),
                      (1, 256, 128, 128)]
    assert [adm_output_block_shape(ADM256, b) for b in blocks] == [
        (1024, 32), (512, 32), (512, 32), (512, 64), (256, 128)]
    assert adm_feature_dim(ADM256, blocks, (50,)) == 2816
    assert adm_feature_dim(ADM256) == 8448
    assert num_output_blocks(ADM256) == 18


def test_bad_block_index_and_description():
    with pytest.raises(AdmBlockError, match=r'index 6 is out of range: this model has 6 output '
                                            r'blocks \(0\.\.5'):
        adm_output_block_path(TINY, 6)
    with pytest.raises(AdmBlockError, match=r"keys \['num_chanels'\] that are neither"):
        adm_output_block_path(dict(num_chanels=32), 0)


# ------------------------------------------------------------------------------ extractor
def test_native_features_equal_the_reference_pipeline(adm, extractor):
    """Shapes, order (for t: for b) and values against the oracle run as ddpm-segmentation does:
    q_sample with ONE randn(1, 3, S, S) of a seeded generator for every image and t."""
    reference, _ = adm
    x = images(3)
    maps = extractor.native(x)
    assert [tuple(m.shape) for m in maps] == [(3, 64, 16, 16), (3, 32, 32, 32), (3, 32, 32, 32)] * 2
    assert extractor.native_shapes == [(64, 16, 16), (32, 32, 32), (32, 32, 32)] * 2
    assert extractor.dim == 2 * (64 + 32 + 32) == 256
    acp = linear_alphas_cumprod()
    noise = torch.randn(1, 3, S, S, generator=torch.Generator().manual_seed(0))
    k = 0
    for t in STEPS:
        x_t = (np.sqrt(acp[t]) * x.double() + np.sqrt(1 - acp[t]) * noise.double()).float()
        want = record({b: reference.output_blocks[b] for b in BLOCKS},
                      lambda: reference(x_t, torch.full((3,), t)))
        for b in BLOCKS:
            assert torch.allclose(maps[k], want[b], atol=1e-4, rtol=1e-4), (t, b)
            k += 1
    # the noise is shared: an image's features do not depend on the rest of the batch
    alone = extractor.native(x[1:2])
    assert all(torch.allclose(a[0], m[1], atol=1e-5) for a, m in zip(alone, maps))


def test_fresh_noise_without_share_noise(adm):
    ext = PixelFeatureExtractor(dict(pretrained=adm[1]), blocks=(5, ), steps=(150, ),
                                share_noise=False, image_size=S)
    x = images(1)
    assert not torch.allclose(ext.native(x)[0], ext.native(x)[0])
    assert 'share_noise' in ext.settings() and ext.settings()['share_noise'] is False


def test_extractor_from_a_built_teacher(adm, extractor):
    from common.teachers import DiffusionTeacher
    teacher = DiffusionTeacher(pretrained=adm[1], layers=['conv_in'], timesteps=[1])
    ext = PixelFeatureExtractor(teacher, blocks=BLOCKS, steps=STEPS, seed=0, image_size=S)
    assert ext.teacher.unet is teacher.unet  # no copy of the weights
    x = images(2)
    assert all(torch.equal(a, b) for a, b in zip(ext.native(x), extractor.native(x)))


def test_extractor_is_registered_and_checks_its_input(adm):
    from mmengine.registry import MODELS
    ext = MODELS.build(dict(type='PixelFeatureExtractor', teacher=dict(pretrained=adm[1]),
                            blocks=[5], steps=[10], image_size=S))
    assert ext.layers == ['up_blocks.2.resnets.1']
    with pytest.raises(PixelFeatureError, match=r'expected images \[B, 3, 32, 32\].*got '
                                                r'\(1, 3, 16, 16\)'):
        ext.native(torch.zeros(1, 3, 16, 16))
    with pytest.raises(PixelFeatureError, match=r'blocks \[12\] are outside the 6 output blocks'):
        PixelFeatureExtractor(dict(pretrained=adm[1]), blocks=(5, 12), image_size=S)
    with pytest.raises(PixelFeatureError, match=r"sets \['timesteps'\], which the extractor"):
        PixelFeatureExtractor(dict(pretrained=adm[1], timesteps=[5]), image_size=S)
    with pytest.raises(PixelFeatureError, match=r"upsample='nearest' is not one of"):
        PixelFeatureExtractor(dict(pretrained=adm[1]), upsample='nearest', image_size=S)


def test_grid_sample_equals_interpolate():
    """At every pixel, including the borders, for maps of several native sizes (non-divisible
    ones too) and a batch of images."""
    g = torch.Generator().manual_seed(0)
    size = 32
    maps = [torch.randn(2, c, h, h, generator=g) for c, h in ((5, 4), (3, 12), (4, 16), (2, 32))]
    full = torch.cat([F.interpolate(m, size=(size, size), mode='bilinear', align_corners=False)
                      for m in maps], dim=1)
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing='ij')
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    for b in range(2):
        got = sample_pixels(maps, rows, cols, size, b)
        assert got.shape == (size * size, 14)
        want = full[b, :, rows, cols].t()
        assert torch.allclose(got, want, atol=2e-6, rtol=1e-5), (got - want).abs().max()
    # one image index per pixel, shuffled order
    perm = torch.randperm(size * size, generator=g)[:100]
    which = torch.randint(2, (100, ), generator=g)
    got = sample_pixels(maps, rows[perm], cols[perm], size, which)
    assert torch.allclose(got, full[which, :, rows[perm], cols[perm]], atol=2e-6, rtol=1e-5)
    # row chunks for dense inference
    chunks = list(upsampled_chunks(maps, size, chunk_rows=5, image_index=1))
    assert [c.shape[1] for c in chunks] == [5] * 6 + [2]
    assert torch.allclose(torch.cat(chunks, dim=1), full[1], atol=2e-6, rtol=1e-5)
    with pytest.raises(PixelFeatureError, match=r'rows hold pixel indices outside 0\.\.31'):
        sample_pixels(maps, torch.tensor([32]), torch.tensor([0]), size)


# ------------------------------------------------------------------------------ store
def key_images(n, seed=1):
    x = images(n, seed)
    return [(f'train/{i:04d}', x[i]) for i in range(n)]


def test_store_round_trip_settings_and_resume(tmp_path, adm, extractor):
    root = tmp_path / 'store'
    store = NativeFeatureStore(root, extractor.settings())
    data = key_images(3)
    assert store.write(extractor, data[:2], batch_size=2, show_progress=False) == \
        ['train/0000', 'train/0001']
    assert store.keys() == ['train/0000', 'train/0001']
    maps = extractor.native(torch.stack([img for _, img in data[:2]]))
    got = store.get('train/0001')
    assert [tuple(m.shape) for m in got] == [(1, ) + s for s in extractor.native_shapes]
    assert all(g.dtype == torch.float16 for g in got)
    for g, m in zip(got, maps):
        assert torch.allclose(g[0].float(), m[1], atol=1e-3, rtol=1e-3)
    manifest = json.loads((root / 'manifest.json').read_text())
    assert manifest['settings']['steps'] == list(STEPS) and len(manifest['digest']) == 64

    # resumable: complete files are kept (untouched), only the missing image is computed
    files = {k: store.path(k) for k in store.keys()}
    before = {k: os.stat(p).st_mtime_ns for k, p in files.items()}
    os.utime(files['train/0000'], ns=(1, 1))
    os.utime(files['train/0001'], ns=(2, 2))
    again = NativeFeatureStore(root, extractor.settings())
    assert again.write(extractor, data, show_progress=False) == ['train/0002']
    assert os.stat(files['train/0000']).st_mtime_ns == 1
    assert os.stat(files['train/0001']).st_mtime_ns == 2
    assert before and again.keys() == ['train/0000', 'train/0001', 'train/0002']
    assert NativeFeatureStore(root).keys() == again.keys()  # reading without settings

    # other settings are refused, naming the setting
    other = dict(extractor.settings(), steps=[50, 250])
    with pytest.raises(PixelFeatureError, match=r'written with steps=\[50, 150\], but this run '
                                                r'has steps=\[50, 250\]'):
        NativeFeatureStore(root, other)
    seeded = PixelFeatureExtractor(dict(pretrained=adm[1]), blocks=BLOCKS, steps=STEPS, seed=1,
                                   image_size=S)
    with pytest.raises(PixelFeatureError, match=r'written with seed=0, but this run has seed=1'):
        NativeFeatureStore(root, seeded.settings())
    with pytest.raises(PixelFeatureError, match=r'written with seed=0, but the extractor has '
                                                r'seed=1'):
        again.write(seeded, data, show_progress=False)
    with pytest.raises(PixelFeatureError, match=r'no such file exists \(3 images stored\)'):
        again.get('train/0009')
    with pytest.raises(PixelFeatureError, match=r'manifest of a native feature store'):
        NativeFeatureStore(tmp_path / 'nowhere')


# ------------------------------------------------------------------------------ sampler
@pytest.fixture(scope='module')
def sampled(tmp_path_factory, extractor):
    """A store of 3 images, masks with 3 classes + ignore (255), and every pixel's feature."""
    root = tmp_path_factory.mktemp('sampler') / 'store'
    store = NativeFeatureStore(root, extractor.settings())
    data = key_images(3, seed=5)
    store.write(extractor, data, show_progress=False)
    g = torch.Generator().manual_seed(7)
    masks = {}
    for key, _ in data:
        mask = torch.zeros(S, S, dtype=torch.uint8)
        mask[:, 20:] = 1
        mask[:4, :4] = 2  # a rare class: 16 pixels per image
        mask[torch.rand(S, S, generator=g) < 0.3] = 255
        masks[key] = mask.numpy()
    full = {}
    for key, _ in data:
        maps = [m.float() for m in store.get(key)]
        full[key] = torch.cat([F.interpolate(m, size=(S, S), mode='bilinear',
                                             align_corners=False) for m in maps], 1)[0]
    return store, masks, full


def collect(sampler):
    feats, labels = zip(*list(sampler))
    return torch.cat(feats), torch.cat(labels)


def test_sampler_yields_labelled_pixels_with_their_features(sampled):
    store, masks, full = sampled
    sampler = PixelSampler(store, masks, ignore_label=255, pixels_per_image='all', seed=0,
                           batch_size=64, drop_last=False, buffer_pixels=500)
    feats, labels = collect(sampler)
    n_valid = sum(int((m != 255).sum()) for m in masks.values())
    assert len(labels) == n_valid == len(sampler) * 64 - (-n_valid % 64)
    assert not (labels == 255).any()
    # every yielded row is the upsampled feature of a distinct labelled pixel with that label
    table = torch.cat([full[k].reshape(full[k].shape[0], -1).t() for k in sorted(masks)])
    table_labels = torch.cat([torch.as_tensor(masks[k]).reshape(-1).long() for k in sorted(masks)])
    dist = torch.cdist(feats, table, compute_mode='donot_use_mm_for_euclid_dist')
    nearest = dist.argmin(dim=1)
    assert float(dist.min(dim=1).values.max()) < 1e-3
    assert torch.equal(table_labels[nearest], labels)
    assert len(nearest.unique()) == n_valid
    assert torch.equal(nearest.sort().values, (table_labels != 255).nonzero().view(-1))


def test_sampler_class_balance_and_determinism(sampled):
    store, masks, _ = sampled

    def make(seed, **kw):
        return PixelSampler(store, masks, ignore_label=255, seed=seed, batch_size=32,
                            drop_last=False, buffer_pixels=256, **kw)

    _, plain = collect(make(0, pixels_per_image=90))
    assert len(plain) == 270 and not (plain == 255).any()
    assert int((plain == 2).sum()) < 30  # class 2 is rare (16 of ~715 labelled pixels)
    _, balanced = collect(make(0, pixels_per_image=90, class_balanced=True))
    assert torch.bincount(balanced).tolist() == [90, 90, 90]
    a, b = collect(make(3, pixels_per_image=50)), collect(make(3, pixels_per_image=50))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = collect(make(4, pixels_per_image=50))
    assert not torch.equal(a[0], c[0])
    sampler = make(3, pixels_per_image=50)
    first, second = collect(sampler), collect(sampler)  # epochs differ, set_epoch replays
    assert not torch.equal(first[0], second[0])
    sampler.set_epoch(0)
    assert torch.equal(collect(sampler)[0], first[0])


def test_sampler_input_errors(sampled):
    store, masks, _ = sampled
    with pytest.raises(PixelFeatureError, match=r"1 of 4 masked images have no native features"
                                                r".*first: 'train/0009'"):
        PixelSampler(store, dict(masks, **{'train/0009': masks['train/0000']}), 255)
    with pytest.raises(PixelFeatureError, match=r"mask of 'train/0000' has shape \(16, 16\); "
                                                r'expected \[32, 32\]'):
        PixelSampler(store, {'train/0000': np.zeros((16, 16))}, 255)
    with pytest.raises(PixelFeatureError, match=r'every pixel of the 1 masks is ignore_label=0'):
        PixelSampler(store, {'train/0000': np.zeros((S, S))}, 0)
    with pytest.raises(PixelFeatureError, match=r'pixels_per_image=0: expected a positive int'):
        PixelSampler(store, masks, 255, pixels_per_image=0)


def test_memory_report_against_hand_computation():
    shapes = [(1024, 32, 32), (512, 32, 32), (512, 32, 32), (512, 64, 64), (256, 128, 128)] * 3
    ffhq = memory_report(20, shapes, 256, buffer_pixels=16384)
    assert ffhq['dim'] == 8448
    assert ffhq['reference_features'] == 20 * 8448 * 65536 * 4 == 44_291_850_240
    assert ffhq['reference_peak'] == 2 * 44_291_850_240 + 20 * 65536
    assert ffhq['store_disk'] == 20 * 25_165_824 * 2
    assert ffhq['ours_peak'] == (20 * 25_165_824 * 2 + 25_165_824 * 4 + 16384 * 8448 * 4
                                 + 20 * 65536 * 8)
    assert ffhq['ratio'] >= 20
    bedroom = memory_report(40, shapes, 256, cache_images=8)
    assert bedroom['ours_native_cache'] == 8 * 25_165_824 * 2 and bedroom['ratio'] >= 20


def test_raw_pixel_baseline_samples_the_pixels_themselves():
    from segmentation.pixel_features import RawPixelFeatures
    ext = RawPixelFeatures(image_size=8)
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    native = ext.native(images)
    assert ext.dim == 3 and ext.native_shapes == [(3, 8, 8)] and len(native) == 1
    rows, cols = torch.tensor([0, 3, 7]), torch.tensor([5, 0, 7])
    got = ext.sample(native, rows, cols, image_index=1)
    torch.testing.assert_close(got, images[1][:, rows, cols].T)
    with pytest.raises(ValueError, match=r'\[B, 3, 8, 8\]'):
        ext.native(torch.rand(1, 3, 4, 4))
