"""``tools/demo_segmentation.py`` end to end on a tiny digits-shaped teacher: every step runs
through the real tools, and results.json holds what the runs wrote."""
import json
import os.path as osp

import numpy as np


def _tiny_digits_teacher(folder):
    """A random pixel DDPM with the digits teacher's layout (four levels, 32 x 32) but few
    channels; its up_blocks.1 upsampler gives the 48 channels the SAE config expects."""
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    torch.manual_seed(1)  # not the demo's random-init seed (0)
    unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(8, 16, 48, 48), norm_num_groups=4,
                       down_block_types=('DownBlock2D', ) * 4, up_block_types=('UpBlock2D', ) * 4)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(
        folder)
    return folder


def test_demo_end_to_end_with_a_tiny_teacher(tmp_path, tools_kit):
    teacher = _tiny_digits_teacher(str(tmp_path / 'teacher'))
    wd = str(tmp_path / 'demo')
    proc = tools_kit.run([osp.join(tools_kit.repo_root, 'tools', 'demo_segmentation.py'),
                          '--work-dir', wd, '--num-test', '4', '--sae-images', '24',
                          '--sae-steps', '5', '--max-epochs', '1', '--teacher', teacher,
                          '--show', '2'],
                         cwd=str(tmp_path), timeout=900)
    assert proc.returncode == 0, proc.output[-4000:]
    with open(osp.join(wd, 'results.json')) as f:
        results = json.load(f)
    assert set(results['mIoU']) == {'ddpm_teacher', 'raw_pixels', 'random_init_unet'}
    for name, row in results['mIoU'].items():
        with open(osp.join(wd, name, 'metrics.json')) as f:
            metrics = json.load(f)
        metrics = metrics.get('metrics', metrics)
        assert row['mIoU'] == round(metrics['mIoU'], 2) and 0 <= row['mIoU'] <= 100
    assert results['num_train'] == 20 and results['num_test'] == 4
    sae = results['sae']
    with open(osp.join(wd, 'sae', 'sae_metrics.json')) as f:
        trained = json.load(f)
    assert trained['steps'] == 5 and trained['train_images'] + trained['eval_images'] == 24
    assert sae['fve'] == trained['eval']['fve'] and sae['l0'] <= 8 + 1e-6  # TopK k = 8
    with open(osp.join(wd, 'sae_alignment', 'alignment.json')) as f:
        table = json.load(f)
    assert sae['mean_best_iou'] == table['mean_best_iou'] and table['num_latents'] == 384
    assert osp.isfile(osp.join(wd, 'predictions.png'))
    assert osp.isfile(osp.join(wd, 'sae', 'feature_density.png'))
    # the random-init UNet is the teacher's architecture with other weights
    from diffusers import UNet2DModel
    a = UNet2DModel.from_pretrained(teacher, subfolder='unet')
    b = UNet2DModel.from_pretrained(osp.join(wd, 'random_init_unet', 'pipeline'),
                                    subfolder='unet')
    assert {k: v for k, v in a.config.items() if k != '_name_or_path'} == \
        {k: v for k, v in b.config.items() if k != '_name_or_path'}
    assert not np.allclose(a.conv_in.weight.detach().numpy(), b.conv_in.weight.detach().numpy())
