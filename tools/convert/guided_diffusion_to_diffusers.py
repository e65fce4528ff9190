"""Convert an OpenAI guided-diffusion UNet checkpoint into a diffusers DDPM pipeline folder.

Give the flags the model was trained with, under their original names (unset flags take
guided-diffusion's defaults). The output folder holds ``unet/`` (a ``UNet2DModel``),
``scheduler/`` (a ``DDPMScheduler``) and ``model_index.json``; a teacher loads it with
``pretrained=OUT_DIR``.

Examples::

    # 64x64 ImageNet (class-conditional)
    python tools/convert/guided_diffusion_to_diffusers.py \\
        64x64_diffusion.pt checkpoints/adm-imagenet64 \\
        --attention_resolutions 32,16,8 --class_cond True --diffusion_steps 1000 --image_size 64 \\
        --learn_sigma True --noise_schedule cosine --num_channels 192 --num_head_channels 64 \\
        --num_res_blocks 3 --resblock_updown True --use_new_attention_order True \\
        --use_scale_shift_norm True

    # 256x256 LSUN/FFHQ models of ddpm-segmentation
    python tools/convert/guided_diffusion_to_diffusers.py \\
        lsun_bedroom.pt checkpoints/adm-lsun-bedroom \\
        --attention_resolutions 32,16,8 --class_cond False --diffusion_steps 1000 \\
        --image_size 256 --learn_sigma True --noise_schedule linear --num_channels 256 \\
        --num_head_channels 64 --num_res_blocks 2 --resblock_updown True \\
        --use_scale_shift_norm True

The arguments are parsed before torch, diffusers or ``common`` is imported.
"""
import argparse
import dataclasses
import os
import sys

PROG = 'guided_diffusion_to_diffusers.py'
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
TOOLS_DIR = os.path.join(REPO_ROOT, 'tools')
if TOOLS_DIR not in sys.path:
    sys.path.append(TOOLS_DIR)  # appended: tools/test.py must not shadow anything
import _cli  # noqa: E402

# guided-diffusion's model flag defaults (its script_util), the defaults of
# common.teachers.convert.GuidedDiffusionFlags too (a test checks that the two agree). Written out
# here so that --help shows them without importing torch, diffusers or common.
MODEL_FLAG_DEFAULTS = dict(
    image_size=64, num_channels=128, num_res_blocks=2, attention_resolutions='16,8', num_heads=4,
    num_head_channels=-1, num_heads_upsample=-1, channel_mult='', learn_sigma=False,
    class_cond=False, use_scale_shift_norm=True, resblock_updown=False,
    use_new_attention_order=False, dropout=0.0)


def str2bool(value):
    """Booleans the way guided-diffusion's scripts read them (True/False, yes/no, 1/0, ...)."""
    if isinstance(value, bool):
        return value
    if value.lower() in ('yes', 'true', 't', 'y', '1'):
        return True
    if value.lower() in ('no', 'false', 'f', 'n', '0'):
        return False
    raise argparse.ArgumentTypeError(f'boolean value expected (True/False), got {value!r}')


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the examples' line breaks and show every flag's default."""


def parse_args(argv=None):
    d = argparse.Namespace(**MODEL_FLAG_DEFAULTS)
    p = _cli.ArgumentParser(prog=PROG, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument('checkpoint', help='guided-diffusion model checkpoint (a torch.save state dict)')
    p.add_argument('out_dir', help='output folder (must not exist unless --overwrite)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing OUT_DIR')

    m = p.add_argument_group('model flags (as the model was trained; defaults are the original)')
    m.add_argument('--image_size', type=int, default=d.image_size, help='training resolution')
    m.add_argument('--num_channels', type=int, default=d.num_channels, help='base width')
    m.add_argument('--num_res_blocks', type=int, default=d.num_res_blocks,
                   help='ResBlocks per level on the way down')
    m.add_argument('--attention_resolutions', default=d.attention_resolutions,
                   help="comma list of resolutions with attention, e.g. '32,16,8'")
    m.add_argument('--num_heads', type=int, default=d.num_heads,
                   help='heads per attention block (when --num_head_channels is -1)')
    m.add_argument('--num_head_channels', type=int, default=d.num_head_channels,
                   help='channels per head (-1: use --num_heads)')
    m.add_argument('--num_heads_upsample', type=int, default=d.num_heads_upsample,
                   help='heads on the way up (-1: --num_heads)')
    m.add_argument('--channel_mult', default=d.channel_mult,
                   help="comma list, e.g. '1,2,3,4'; '' = guided-diffusion's default for the size")
    m.add_argument('--learn_sigma', type=str2bool, default=d.learn_sigma,
                   help='the model also outputs the variance (6 output channels)')
    m.add_argument('--class_cond', type=str2bool, default=d.class_cond,
                   help='ImageNet class-conditional (1000 classes)')
    m.add_argument('--use_scale_shift_norm', type=str2bool, default=d.use_scale_shift_norm,
                   help='ResBlocks scale and shift by the embedding')
    m.add_argument('--resblock_updown', type=str2bool, default=d.resblock_updown,
                   help='resample with ResBlocks instead of convs')
    m.add_argument('--use_new_attention_order', type=str2bool, default=d.use_new_attention_order,
                   help='qkv channel order; cannot be read from the weights: a wrong value '
                        'converts without error but gives a different network')
    m.add_argument('--dropout', type=float, default=d.dropout, help='kept in the config only')
    for ignored in ('--use_fp16', '--use_checkpoint'):
        m.add_argument(ignored, type=str2bool, default=False,
                       help='accepted for pasted flag strings; no effect (weights stay float32)')

    s = p.add_argument_group('diffusion flags (for scheduler/)')
    s.add_argument('--diffusion_steps', type=int, default=1000, help='training timesteps')
    s.add_argument('--noise_schedule', choices=('linear', 'cosine'), default='linear',
                   help='beta schedule')
    s.add_argument('--predict_xstart', type=str2bool, default=False,
                   help='the model predicts x0 instead of the noise')
    s.add_argument('--sigma_small', type=str2bool, default=False,
                   help='fixed small variance (only without --learn_sigma)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from common.io import CheckpointLoadError, UnsafeCheckpointError, load_checkpoint
    from common.io import state_dict_from_checkpoint
    from common.teachers.convert import (GuidedDiffusionConversionError, GuidedDiffusionFlags,
                                         check_output_folder, convert_guided_diffusion,
                                         ddpm_scheduler_from_flags, save_pipeline_atomically)

    flags = GuidedDiffusionFlags(**{f.name: getattr(args, f.name)
                                    for f in dataclasses.fields(GuidedDiffusionFlags)})
    try:
        check_output_folder(os.path.abspath(args.out_dir), args.overwrite)
        scheduler = ddpm_scheduler_from_flags(args.diffusion_steps, args.noise_schedule,
                                              args.learn_sigma, args.predict_xstart,
                                              args.sigma_small)
        print(f'Reading {args.checkpoint} ...', flush=True)
        state_dict = state_dict_from_checkpoint(load_checkpoint(args.checkpoint))
        print('Converting to a diffusers UNet2DModel ...', flush=True)
        unet = convert_guided_diffusion(state_dict, flags)
        print(f'Writing {args.out_dir} ...', flush=True)
        out_dir = save_pipeline_atomically(unet, scheduler, args.out_dir, args.overwrite)
    except (CheckpointLoadError, UnsafeCheckpointError, GuidedDiffusionConversionError) as err:
        print(f'{PROG}: error: {err}', file=sys.stderr)
        return 1
    except OSError as err:  # e.g. disk full or no permission while writing OUT_DIR
        print(f'{PROG}: error: could not write {args.out_dir!r} ({err}); nothing was left '
              f'behind.', file=sys.stderr)
        return 1
    params = sum(p.numel() for p in unet.parameters())
    print(f'Wrote {out_dir} (UNet2DModel with {params / 1e6:.1f}M parameters, '
          f'{args.noise_schedule} DDPMScheduler with {args.diffusion_steps} steps).')
    return 0


if __name__ == '__main__':
    sys.exit(main())
