"""``benchmarks/itm_scoring.py``: its argument errors, the SD 2.1-base configs it writes by hand,
and one minimal run (tiny model, one question, one timestep) with its JSON."""
import json
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks')
sys.path.insert(0, BENCH)

import itm_scoring  # noqa: E402


@pytest.mark.parametrize('args, message', [
    (['--timesteps', '0'], '--timesteps 0: must be at least 1'),
    (['--dtype', 'float16'], '--dtype float16 on the CPU: half-precision convolutions'),
    (['--json', 'out.txt'], '--json out.txt: the results are JSON; name the file *.json'),
    (['--model', 'sd15'], "argument --model: invalid choice: 'sd15'"),
])
def test_argument_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        itm_scoring.parse_args(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_sd21_base_configs_are_the_released_shapes():
    # stabilityai/stable-diffusion-2-1-base: 64 x 64 latents (512 px), OpenCLIP-H text (1024
    # wide, 23 layers as used), heads of 64 channels (320 / 5, 640 / 10, 1280 / 20)
    arch = itm_scoring.ARCHS['sd21-base-arch']
    unet = arch['unet']
    assert (arch['image_size'], unet['sample_size']) == (512, 64)
    assert [c // h for c, h in zip(unet['block_out_channels'], unet['attention_head_dim'])] == \
        [64, 64, 64, 64]
    assert unet['cross_attention_dim'] == arch['text']['hidden_size'] == 1024
    assert arch['scheduler']['prediction_type'] == 'epsilon'
    assert 2 ** (len(arch['vae']['block_out_channels']) - 1) * 64 == 512


def test_minimal_run_scores_equal_and_writes_json(tmp_path, capsys):
    out = tmp_path / 'itm.json'
    rows = itm_scoring.main(['--kinds', 'image', '--questions', '1', '--repeats', '1',
                             '--timesteps', '1', '--json', str(out)])
    (row, ) = rows
    assert row['scores_equal'] and row['same_best'] == 1 and row['max_abs_gap'] < 1e-4
    # one question of 2 images x 1 caption x 1 timestep: 2 cond + 2 uncond rows in one call,
    # against one call per pair for the reference
    assert (row['ours_unet_calls'], row['reference_unet_calls'], row['timesteps']) == (1, 2, 1)
    assert row['speedup'] == pytest.approx(row['reference_s'] / row['ours_s'])
    saved = json.loads(out.read_text())
    assert saved['model'] == 'tiny' and saved['rows'][0]['kind'] == 'image'
    printed = capsys.readouterr().out
    assert '| image | 2 images |' in printed and 'speed-up image retrieval: ' in printed
