"""tools/convert/guided_diffusion_to_diffusers.py against an independent guided-diffusion UNet.

The oracle (tests/helpers/guided_diffusion_reference.py) has the original checkpoint key layout;
its random weights are saved with torch.save, converted by the tool, loaded back with
``UNet2DModel.from_pretrained`` and both networks are run on the same inputs.
"""
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # plain `pytest` (not `python -m pytest`) from elsewhere
    sys.path.insert(0, str(REPO))

from common.teachers.convert import (GuidedDiffusionConversionError,  # noqa: E402
                                     GuidedDiffusionFlags, ddpm_scheduler_from_flags,
                                     unet2d_config_from_flags)
from common.teachers.convert.guided_diffusion import convert_state_dict  # noqa: E402
from tests.helpers.guided_diffusion_reference import reference_unet_from_flags  # noqa: E402

TOOL = REPO / 'tools' / 'convert' / 'guided_diffusion_to_diffusers.py'
TINY = dict(image_size=16, num_channels=32, channel_mult='1,2', num_res_blocks=1,
            attention_resolutions='8', num_head_channels=16)
# The published settings of the real checkpoints.
IMAGENET64 = dict(attention_resolutions='32,16,8', class_cond=True, image_size=64,
                  learn_sigma=True, num_channels=192, num_head_channels=64, num_res_blocks=3,
                  resblock_updown=True, use_new_attention_order=True, use_scale_shift_norm=True)
LSUN256 = dict(attention_resolutions='32,16,8', class_cond=False, image_size=256,
               learn_sigma=True, num_channels=256, num_head_channels=64, num_res_blocks=2,
               resblock_updown=True, use_scale_shift_norm=True)


def load_tool():
    spec = importlib.util.spec_from_file_location('guided_diffusion_to_diffusers', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def tool():
    return load_tool()


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine OpenMP threads spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def reference_model(seed=0, **flags):
    """The oracle with random weights; GroupNorm affines are perturbed too so swaps show up."""
    torch.manual_seed(seed)
    model = reference_unet_from_flags(**flags).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.copy_(1 + 0.2 * torch.randn_like(m.weight))
                m.bias.copy_(0.2 * torch.randn_like(m.bias))
    return model


def save_reference(folder, seed=0, **flags):
    model = reference_model(seed, **flags)
    path = Path(folder) / 'model.pt'
    torch.save(model.state_dict(), path)
    return model, path


def cli_args(ckpt, out_dir, flags, *extra):
    args = [str(ckpt), str(out_dir)]
    for key, value in flags.items():
        args += [f'--{key}', str(value)]
    return args + list(extra)


def assert_same_outputs(reference, out_dir, flags, seed=0):
    from diffusers import UNet2DModel
    unet = UNet2DModel.from_pretrained(os.path.join(out_dir, 'unet')).eval()
    g = torch.Generator().manual_seed(seed)
    size = flags['image_size']
    x = torch.randn(2, 3, size, size, generator=g)
    t = torch.tensor([0, 917])
    y = torch.tensor([7, 999]) if flags.get('class_cond') else None
    with torch.no_grad():
        want = reference(x, t, y)
        got = unet(x, t, class_labels=y).sample
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), (got - want).abs().max()


def expected_betas(steps, schedule):
    """guided-diffusion's betas, computed by hand in float64."""
    if schedule == 'linear':
        start, end = 1000 / steps * 1e-4, 1000 / steps * 0.02
        return torch.tensor([start + (end - start) * i / (steps - 1) for i in range(steps)],
                            dtype=torch.float64)

    def alpha_bar(s):
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    return torch.tensor([min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999)
                         for i in range(steps)], dtype=torch.float64)


def assert_scheduler_folder(out_dir, steps, schedule, learn_sigma):
    from diffusers import DDPMScheduler
    scheduler = DDPMScheduler.from_pretrained(os.path.join(out_dir, 'scheduler'))
    assert torch.allclose(scheduler.betas.double(), expected_betas(steps, schedule), atol=1e-7)
    assert scheduler.config.variance_type == ('learned_range' if learn_sigma else 'fixed_large')
    index = json.loads(Path(out_dir, 'model_index.json').read_text())
    assert index['_class_name'] == 'DDPMPipeline'
    assert index['unet'] == ['diffusers', 'UNet2DModel']
    assert index['scheduler'] == ['diffusers', 'DDPMScheduler']


def test_cli_converts_an_imagenet64_style_model(tmp_path):
    """End to end through a real process, with the ImageNet-64 model's switches (tiny widths)."""
    flags = dict(TINY, num_res_blocks=2, class_cond=True, learn_sigma=True, resblock_updown=True,
                 use_scale_shift_norm=True, use_new_attention_order=True)
    reference, ckpt = save_reference(tmp_path, **flags)
    out_dir = tmp_path / 'adm64'
    args = cli_args(ckpt, out_dir, flags, '--diffusion_steps', '1000', '--noise_schedule',
                    'cosine', '--dropout', '0.1', '--use_fp16', 'True')
    env = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, str(TOOL)] + args, cwd=tmp_path, capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert 'Reading' in proc.stdout and 'Wrote' in proc.stdout
    assert sorted(os.listdir(tmp_path)) == ['adm64', 'model.pt']  # no temporary folder left
    assert sorted(os.listdir(out_dir)) == ['model_index.json', 'scheduler', 'unet']
    assert_same_outputs(reference, out_dir, flags)
    assert_scheduler_folder(out_dir, 1000, 'cosine', learn_sigma=True)

    from common.teachers import load_diffusion_components  # what pretrained=OUT_DIR does
    components = load_diffusion_components(str(out_dir))
    assert type(components.unet).__name__ == 'UNet2DModel' and not components.is_latent
    assert torch.allclose(components.noise_scheduler.betas.double(),
                          expected_betas(1000, 'cosine'), atol=1e-7)


CASES = {
    'legacy-order_conv-resample_additive-emb': (
        dict(TINY, resblock_updown=False, use_scale_shift_norm=False), 250, 'linear'),
    'legacy-order_resblock-resample_scale-shift_3-levels': (
        dict(TINY, channel_mult='1,1,2', attention_resolutions='16,4', num_res_blocks=2,
             resblock_updown=True, use_scale_shift_norm=True, learn_sigma=True), 1000, 'linear'),
    'new-order_num-heads_conv-resample': (
        dict(TINY, channel_mult='1,1', attention_resolutions='16,8', num_heads=2,
             num_head_channels=-1, use_new_attention_order=True, resblock_updown=False,
             use_scale_shift_norm=True, class_cond=True), 500, 'cosine'),
}


@pytest.mark.parametrize('name', list(CASES))
def test_converted_model_matches_reference(name, tool, tmp_path, capsys):
    flags, steps, schedule = CASES[name]
    reference, ckpt = save_reference(tmp_path, seed=len(name), **flags)
    out_dir = tmp_path / 'out'
    args = cli_args(ckpt, out_dir, flags, '--diffusion_steps', str(steps), '--noise_schedule',
                    schedule)
    assert tool.main(args) == 0, capsys.readouterr().err
    assert_same_outputs(reference, out_dir, flags)
    assert_scheduler_folder(out_dir, steps, schedule, flags.get('learn_sigma', False))


def test_attention_order_is_not_interchangeable():
    """The order flag changes the result, so the cases above really test the qkv layout."""
    from common.teachers.convert import convert_guided_diffusion
    flags = dict(TINY, use_new_attention_order=True)
    reference = reference_model(**flags)
    wrong = convert_guided_diffusion(reference.state_dict(), **dict(flags,
                                                                    use_new_attention_order=False))
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([10])
    with torch.no_grad():
        assert not torch.allclose(wrong(x, t).sample, reference(x, t), atol=1e-3)


def test_schedulers_match_hand_computation():
    for steps, schedule in [(1000, 'linear'), (250, 'linear'), (4000, 'cosine')]:
        betas = ddpm_scheduler_from_flags(steps, schedule).betas.double()
        assert torch.allclose(betas, expected_betas(steps, schedule), atol=1e-7)
    assert ddpm_scheduler_from_flags(learn_sigma=True).config.variance_type == 'learned_range'
    assert ddpm_scheduler_from_flags(predict_xstart=True).config.prediction_type == 'sample'


MISFITS = {  # checkpoint flags, conversion flags, words the error must contain
    'num_res_blocks': (dict(TINY, num_res_blocks=2), dict(TINY), ['unexpected', 'missing']),
    'class_cond': (dict(TINY, class_cond=True), dict(TINY), ['label_emb', '--class_cond True']),
    'learn_sigma': (dict(TINY, learn_sigma=True), dict(TINY), ['out.2.weight', '--learn_sigma']),
    'scale_shift': (dict(TINY), dict(TINY, use_scale_shift_norm=False),
                    ['emb_layers.1', '--use_scale_shift_norm True']),
}


@pytest.mark.parametrize('name', list(MISFITS))
def test_checkpoint_that_does_not_fit_the_flags(name, tool, tmp_path, capsys):
    ckpt_flags, flags, words = MISFITS[name]
    _, ckpt = save_reference(tmp_path, **ckpt_flags)
    assert tool.main(cli_args(ckpt, tmp_path / 'out', flags)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f'{tool.PROG}: error: The checkpoint does not fit the flags')
    assert 'trained with' in err and err.count('\n') == 1  # one paragraph
    for word in words:
        assert word in err
    assert sorted(os.listdir(tmp_path)) == ['model.pt']  # nothing written, no temp folder


class _RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_unsafe_checkpoint_is_refused(tool, tmp_path, capsys):
    marker = str(tmp_path / 'payload_ran')
    ckpt = tmp_path / 'evil.pt'
    torch.save({'input_blocks.0.0.weight': torch.zeros(1), 'x': _RunsCodeWhenUnpickled(marker)},
               ckpt)
    assert tool.main(cli_args(ckpt, tmp_path / 'out', TINY)) == 1
    err = capsys.readouterr().err
    assert 'Refused to load' in err and 'Traceback' not in err
    assert not os.path.exists(marker)
    assert sorted(os.listdir(tmp_path)) == ['evil.pt']


def test_missing_checkpoint_and_existing_output(tool, tmp_path, capsys):
    assert tool.main(cli_args(tmp_path / 'nope.pt', tmp_path / 'out', TINY)) == 1
    assert 'Checkpoint not found' in capsys.readouterr().err

    reference, ckpt = save_reference(tmp_path, **TINY)
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    (out_dir / 'keep.txt').write_text('old')
    assert tool.main(cli_args(ckpt, out_dir, TINY)) == 1
    assert '--overwrite' in capsys.readouterr().err
    assert os.listdir(out_dir) == ['keep.txt']
    assert tool.main(cli_args(ckpt, out_dir, TINY, '--overwrite')) == 0
    assert sorted(os.listdir(out_dir)) == ['model_index.json', 'scheduler', 'unet']
    assert sorted(os.listdir(tmp_path)) == ['model.pt', 'out']
    assert_same_outputs(reference, out_dir, TINY)


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    from diffusers import DDPMPipeline, UNet2DModel
    from common.teachers.convert import save_pipeline_atomically
    unet = UNet2DModel(**unet2d_config_from_flags(**TINY))

    def half_write(self, folder, **kwargs):
        os.makedirs(os.path.join(folder, 'unet'))
        Path(folder, 'unet', 'config.json').write_text('{')
        raise OSError('disk full')

    monkeypatch.setattr(DDPMPipeline, 'save_pretrained', half_write)
    with pytest.raises(OSError, match='disk full'):
        save_pipeline_atomically(unet, ddpm_scheduler_from_flags(), tmp_path / 'new')
    assert os.listdir(tmp_path) == []
    old = tmp_path / 'old'
    old.mkdir()
    (old / 'keep.txt').write_text('old')
    with pytest.raises(OSError, match='disk full'):
        save_pipeline_atomically(unet, ddpm_scheduler_from_flags(), old, overwrite=True)
    assert os.listdir(tmp_path) == ['old'] and os.listdir(old) == ['keep.txt']


@pytest.mark.parametrize('flags, channels, heads, downs', [
    (IMAGENET64, (192, 384, 576, 768), 64,
     ('ResnetDownsampleBlock2D', 'AttnDownBlock2D', 'AttnDownBlock2D', 'AttnDownBlock2D')),
    (LSUN256, (256, 256, 512, 512, 1024, 1024), 64,
     ('ResnetDownsampleBlock2D',) * 3 + ('AttnDownBlock2D',) * 3),
])
def test_real_model_flags(flags, channels, heads, downs):
    """The published flags give the expected UNet2DModel, and every key of a checkpoint with
    the original layout maps onto it (checked with meta tensors: no memory, no weights)."""
    from diffusers import UNet2DModel
    config = unet2d_config_from_flags(**flags)
    assert config['block_out_channels'] == channels
    assert config['attention_head_dim'] == heads
    assert config['down_block_types'] == downs
    assert config['up_block_types'] == tuple(
        t.replace('Down', 'Up') for t in reversed(downs))
    assert config['out_channels'] == 6 and config['resnet_time_scale_shift'] == 'scale_shift'
    assert config['num_class_embeds'] == (1000 if flags['class_cond'] else None)
    with torch.device('meta'):
        reference = reference_unet_from_flags(**flags)
        unet = UNet2DModel(**config)
    shapes = {k: v.shape for k, v in unet.state_dict().items()}
    converted = convert_state_dict(reference.state_dict(), GuidedDiffusionFlags(**flags), shapes)
    assert set(converted) == set(shapes)
    assert sum(v.numel() for v in converted.values()) == sum(
        p.numel() for p in reference.parameters())


@pytest.mark.parametrize('flags, words', [
    (dict(TINY, attention_resolutions='16,8', num_heads=4, num_head_channels=-1),
     ['attention_head_dim', '[8, 16]']),
    (dict(TINY, channel_mult='0.5,1', num_channels=64), ['channel_mult', 'cannot be expressed']),
    (dict(TINY, image_size=48, channel_mult=''), ['--channel_mult']),
    (dict(TINY, num_head_channels=24), ['--num_head_channels 24']),
])
def test_unsupported_flags_are_explained(flags, words):
    with pytest.raises(GuidedDiffusionConversionError) as info:
        unet2d_config_from_flags(**flags)
    for word in words:
        assert word in str(info.value)
