"""Export the LoRA adapters of a DSDMatcher training checkpoint as a diffusers LoRA folder.

    python tools/export_itm_lora.py CONFIG CHECKPOINT OUT_DIR [--overwrite]
        [--cfg-options KEY=VALUE ...]

CONFIG is the training config (its ``model`` is a ``DSDMatcher`` with ``lora=dict(targets=...,
rank=..., alpha=...)``); only its ``model.lora`` settings are read (rank and alpha: the LoRA
scale), so the Stable Diffusion pipeline it names need not be on this machine. CHECKPOINT is read
with the safe loader (``common.io.checkpoint.load_checkpoint``: no pickled code runs); a DSDMatcher
checkpoint holds only ``unet_lora.<module>.lora_A/lora_B.default.weight`` entries.

OUT_DIR is written atomically (all or nothing): ``pytorch_lora_weights.safetensors`` in diffusers'
LoRA format (keys ``unet.<module>.lora.down/up.weight``, the ``LoraConfig`` in the safetensors
metadata) and ``export_info.json`` (source checkpoint path and sha256, iteration, config). Use it
with ``DSDMatcher(lora_weights=OUT_DIR)`` (e.g. ``--cfg-options model.lora_weights=OUT_DIR`` for
``tools/test.py``), the playground, or a stock pipeline: ``pipe.load_lora_weights(OUT_DIR)``.

The one rule: nothing is written unless the checkpoint is a complete DSDMatcher LoRA checkpoint
whose rank is the config's. The arguments are parsed before torch, mmengine or ``common`` is
imported, so ``--help`` and argument errors answer at once. Exit codes: 0 exported, 1 a checkpoint
or config that cannot be exported (one paragraph, nothing written), 2 a usage error.
"""
import os.path as osp
import sys

if osp.dirname(osp.abspath(__file__)) not in sys.path:  # imported, not run as a script
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _cli  # noqa: E402

_cli.make_repo_importable()

PROG = 'tools/export_itm_lora.py'
INFO_NAME = 'export_info.json'


def parse_args(argv=None):
    import argparse
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', metavar='CONFIG', help='the DSDMatcher training config')
    parser.add_argument('checkpoint', metavar='CHECKPOINT',
                        help='a checkpoint of that training (iter_N.pth, or .safetensors)')
    parser.add_argument('out_dir', metavar='OUT_DIR', help='the LoRA folder to write')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing OUT_DIR (only once the new one is complete)')
    _cli.add_cfg_options_arg(parser)
    args = parser.parse_args(argv)
    _cli.check_export_paths(parser, args)
    return args


def lora_settings(cfg, config_path):
    """The config's ``model.lora`` dict (rank, alpha) of a DSDMatcher config."""
    model = cfg.get('model')
    if not _cli.is_mapping(model) or model.get('type') not in ('DSDMatcher', 'mmengine.DSDMatcher'):
        raise _cli.UsageError(
            f'{config_path}: model is {model.get("type") if _cli.is_mapping(model) else model!r}, '
            f'not a DSDMatcher; pass the image_text_matching training config the checkpoint was '
            f'written with (model=dict(type=\'DSDMatcher\', lora=dict(...))).')
    lora = model.get('lora')
    if lora is None:
        raise _cli.UsageError(
            f'{config_path}: model.lora is None, so that config trains no LoRA adapter; pass the '
            f'config of the prompt-learning run (model.lora=dict(targets=..., rank=...)).')
    return dict(lora)


def export(config, checkpoint, out_dir, cfg_options=None, overwrite=False):
    """Export as the command line does; returns ``(out_dir, info)``."""
    import json

    from common.io.atomic_folder import atomic_folder
    from common.io.checkpoint import load_checkpoint, state_dict_from_checkpoint
    from common.io.feature_shards import file_sha256
    from image_text_matching.models.lora import write_lora_file
    from image_text_matching.models.matcher import lora_from_state_dict
    cfg = _cli.load_config(config, cfg_options)
    lora = lora_settings(cfg, config)
    ckpt = load_checkpoint(checkpoint, map_location='cpu')
    state = state_dict_from_checkpoint(ckpt)
    if not isinstance(state, dict):
        raise _cli.RunError(f'{checkpoint} holds a {type(state).__name__}, not a state dict; '
                            f'pass a checkpoint written by tools/train.py.')
    peft_state, lora_config = lora_from_state_dict(state, lora)
    meta = ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}
    meta = meta if isinstance(meta, dict) else {}
    info = dict(source_checkpoint=osp.abspath(checkpoint), source_sha256=file_sha256(checkpoint),
                iteration=meta.get('iter', 'unknown'), epoch=meta.get('epoch', 'unknown'),
                config=osp.abspath(config), rank=lora_config['r'],
                lora_alpha=lora_config['lora_alpha'],
                adapted_modules=len(lora_config['target_modules']))
    with atomic_folder(out_dir, overwrite=overwrite) as tmp:
        write_lora_file(tmp, peft_state, lora_config)
        with open(osp.join(tmp, INFO_NAME), 'w', encoding='utf-8') as f:
            json.dump(info, f, indent=2)
    return out_dir, info


KNOWN_ERRORS = ['image_text_matching.models.lora:LoRAError',
                'common.io.atomic_folder:FolderExistsError']


def _main(argv=None):
    args = parse_args(argv)
    out_dir, info = export(args.config, args.checkpoint, args.out_dir, args.cfg_options,
                           overwrite=args.overwrite)
    print(f'{PROG}: exported the LoRA of {args.checkpoint} (iteration {info["iteration"]}, '
          f'{info["adapted_modules"]} modules, rank {info["rank"]}, alpha {info["lora_alpha"]:g})'
          f' to {out_dir}; evaluate it with --cfg-options model.lora_weights={out_dir}')


def main(argv=None):
    """Run the command line; returns the exit code (0, 1 or 2) instead of raising."""
    return _cli.run_cli(PROG, lambda a: _cli.run_reporting(
        _main, a, KNOWN_ERRORS, catch=(ValueError, FileExistsError)), argv)


if __name__ == '__main__':
    sys.exit(main())
