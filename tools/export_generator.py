"""Export the one-step generator of a DMD training checkpoint as a generator folder.

    python tools/export_generator.py CONFIG CHECKPOINT OUT_DIR [--weights ema|generator]
        [--overwrite] [--cfg-options KEY=VALUE ...]

CONFIG is the training config (its ``model`` is a ``DMDDistiller``); the distiller is built from
it, so the teacher folder the config names must exist: the generator's architecture is the
teacher's. CHECKPOINT is read with the safe loader (``common.io.checkpoint.load_checkpoint``: no
pickled code runs; an mmengine checkpoint holds ``state_dict`` + ``meta``, a ``.safetensors``
file the flat state dict). The generator's weights are the checkpoint's ``generator_ema.*``
entries (``--weights ema``; the default when the checkpoint has them) or ``generator.*``
(``--weights generator``); a line says which were used.

OUT_DIR is written atomically (all or nothing) by ``generation_dmd.generator.save_generator``:
``generator.json`` (format, sigma, image shape, classes, and as metadata the source checkpoint
path and sha256, its iteration and which weights) + ``network/``. Load it with
``load_generator(OUT_DIR)`` or sample it with ``tools/generate_samples.py OUT_DIR --out grid.png``.

The one rule: nothing is written unless every check passed (the checkpoint is a DMD checkpoint,
the requested weights are in it and fit the generator the config builds). The arguments are parsed
before torch, mmengine or ``common`` is imported, so ``--help`` and argument errors answer at once.
Exit codes: 0 exported, 1 a checkpoint or config that cannot be exported (one paragraph, nothing
written), 2 a usage error.
"""
import os.path as osp
import sys

if osp.dirname(osp.abspath(__file__)) not in sys.path:  # imported, not run as a script
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _cli  # noqa: E402

_cli.make_repo_importable()

PROG = 'tools/export_generator.py'
PREFIXES = {'ema': 'generator_ema.', 'generator': 'generator.'}
# an mmengine ExponentialMovingAverage wraps the averaged module as `module` and counts `steps`
EMA_WRAPPER_PREFIX = 'module.'
EMA_WRAPPER_BUFFERS = ('steps', )
SHOWN = 5


def parse_args(argv=None):
    import argparse
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', metavar='CONFIG', help='the DMD training config')
    parser.add_argument('checkpoint', metavar='CHECKPOINT',
                        help='a checkpoint of that training (iter_N.pth, or .safetensors)')
    parser.add_argument('out_dir', metavar='OUT_DIR', help='the generator folder to write')
    parser.add_argument('--weights', choices=sorted(PREFIXES),
                        help='ema: the generator_ema.* weights; generator: generator.* '
                        '(default: ema when the checkpoint has them, else generator)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing OUT_DIR (only once the new one is complete)')
    _cli.add_cfg_options_arg(parser)
    args = parser.parse_args(argv)
    _cli.check_export_paths(parser, args)
    return args


# ------------------------------------------------------------------------------------ weights
def _key_summary(keys):
    """``'generator.* (12 keys), fake_score.* (12 keys)'``: a state dict's top-level groups."""
    groups = {}
    for key in keys:
        head = key.split('.', 1)[0]
        groups[head] = groups.get(head, 0) + 1
    shown = [f'{head}{".*" if head not in keys else ""} ({n} key{"s" if n > 1 else ""})'
             for head, n in sorted(groups.items())]
    return ', '.join(shown[:8]) + (f' (and {len(shown) - 8} more groups)' if len(shown) > 8
                                   else '') or 'nothing'


def select_weights(state, weights=None, source='the checkpoint'):
    """``(which, generator_state)`` from a DMDDistiller state dict.

    ``which`` is ``'ema'`` or ``'generator'``: ``weights`` when given, else ``'ema'`` when
    ``generator_ema.*`` entries exist. The prefix is stripped; an EMA kept by mmengine's
    ``ExponentialMovingAverage`` (``generator_ema.module.*`` + ``generator_ema.steps``) is
    unwrapped. Raises ``_cli.RunError`` for a state dict without the requested entries.
    """
    has = {name: any(k.startswith(prefix) for k in state) for name, prefix in PREFIXES.items()}
    if not (has['ema'] or has['generator']):
        raise _cli.RunError(
            f'{source} is not a DMD checkpoint: it has no generator.* (or generator_ema.*) '
            f'weights; it holds {_key_summary(state)}. Pass a checkpoint written by training a '
            f'DMDDistiller (tools/train.py with a generation_dmd config, work_dir/iter_N.pth).')
    if weights is None:
        weights = 'ema' if has['ema'] else 'generator'
    if not has[weights]:
        raise _cli.RunError(
            f'--weights {weights}: {source} has no {PREFIXES[weights]}* entries (the training '
            f'ran without an EMA of the generator); it holds {_key_summary(state)}. Export the '
            f'raw generator with --weights generator, or leave --weights out.')
    prefix = PREFIXES[weights]
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if weights == 'ema' and sub and all(k.startswith(EMA_WRAPPER_PREFIX) or
                                        k in EMA_WRAPPER_BUFFERS for k in sub):
        sub = {k[len(EMA_WRAPPER_PREFIX):]: v for k, v in sub.items()
               if k.startswith(EMA_WRAPPER_PREFIX)}
    return weights, sub


def load_into(generator, sub, source, prefix):
    """``generator.load_state_dict(sub, strict=True)`` with a one-paragraph error on mismatch."""
    expected = {k: tuple(v.shape) for k, v in generator.state_dict().items()}
    missing = sorted(set(expected) - set(sub))
    unexpected = sorted(set(sub) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(sub) if tuple(sub[k].shape) != expected[k])
    if missing or unexpected or reshaped:
        parts = []
        if missing:
            parts.append(f'{len(missing)} weights of the generator are missing '
                         f'({", ".join(prefix + k for k in missing[:SHOWN])})')
        if unexpected:
            parts.append(f'{len(unexpected)} are not in the generator '
                         f'({", ".join(prefix + k for k in unexpected[:SHOWN])})')
        if reshaped:
            parts.append(f'{len(reshaped)} have another shape (' + ', '.join(
                f'{prefix}{k}: checkpoint {tuple(sub[k].shape)} vs generator {expected[k]}'
                for k in reshaped[:SHOWN]) + ')')
        raise _cli.RunError(
            f'The {prefix}* weights of {source} do not fit the generator CONFIG builds: '
            + '; '.join(parts) + '. The teacher in CONFIG (its architecture) must be the one '
            'the checkpoint was trained from; pass the training\'s own config.')
    generator.load_state_dict(sub, strict=True)


# ------------------------------------------------------------------------------------ export
def build_distiller(cfg, config_path):
    """The ``DMDDistiller`` of ``cfg.model``, built in the config's registry scope."""
    import importlib

    import torch
    from mmengine.registry import MODELS
    for module in ('generation_dmd', 'generation_dmd.distiller'):  # registers the model types
        importlib.import_module(module)
    model_cfg = cfg.get('model')
    if not _cli.is_mapping(model_cfg):
        raise _cli.UsageError(f'{config_path} has no `model` dict; expected the DMD training '
                              f'config (model=dict(type=\'DMDDistiller\', ...)).')
    with _cli.config_scope(cfg):
        model = MODELS.build(model_cfg)
    if not isinstance(getattr(model, 'generator', None), torch.nn.Module):
        raise _cli.UsageError(
            f'{config_path}: model is a {type(model).__name__}, which has no `generator`; '
            f'expected a DMDDistiller config (model=dict(type=\'DMDDistiller\', ...)).')
    return model


def export(config, checkpoint, out_dir, weights=None, cfg_options=None, overwrite=False):
    """Export as the command line does; returns ``(out_dir, which, metadata)``."""
    from common.io.checkpoint import load_checkpoint, state_dict_from_checkpoint
    from common.io.feature_shards import file_sha256
    from generation_dmd.generator import save_generator
    cfg = _cli.load_config(config, cfg_options)
    ckpt = load_checkpoint(checkpoint, map_location='cpu')
    state = state_dict_from_checkpoint(ckpt)
    if not isinstance(state, dict):
        raise _cli.RunError(f'{checkpoint} holds a {type(state).__name__}, not a state dict; '
                            f'pass a checkpoint written by tools/train.py.')
    which, sub = select_weights(state, weights, source=checkpoint)
    meta = ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}
    meta = meta if isinstance(meta, dict) else {}
    distiller = build_distiller(cfg, config)
    generator = distiller.generator
    load_into(generator, sub, checkpoint, PREFIXES[which])
    generator = generator.to('cpu').eval()
    metadata = dict(source_checkpoint=osp.abspath(checkpoint),
                    source_sha256=file_sha256(checkpoint),
                    iteration=meta.get('iter', 'unknown'), epoch=meta.get('epoch', 'unknown'),
                    weights=PREFIXES[which] + '*', config=osp.abspath(config))
    save_generator(generator, out_dir, metadata=metadata, overwrite=overwrite)
    return out_dir, which, metadata


KNOWN_ERRORS = ['generation_dmd.generator:GeneratorLoadError',
                'generation_dmd.networks:EDMLoadError',
                'common.io.atomic_folder:FolderExistsError',
                'builtins:FileNotFoundError']  # e.g. the config's teacher folder


def _main(argv=None):
    args = parse_args(argv)
    out_dir, which, metadata = export(args.config, args.checkpoint, args.out_dir, args.weights,
                                      args.cfg_options, overwrite=args.overwrite)
    why = ('' if args.weights else ' (the default: the checkpoint has them)' if which == 'ema'
           else ' (the checkpoint has no generator_ema.* weights)')
    print(f'{PROG}: used the {metadata["weights"]} weights{why} of {args.checkpoint} '
          f'(iteration {metadata["iteration"]}, sha256 {metadata["source_sha256"][:12]}...)')
    print(f'{PROG}: wrote {out_dir}; sample it with python tools/generate_samples.py {out_dir} '
          f'--out grid.png')


def main(argv=None):
    """Run the command line; returns the exit code (0, 1 or 2) instead of raising."""
    return _cli.run_cli(PROG, lambda a: _cli.run_reporting(
        _main, a, KNOWN_ERRORS, catch=(RuntimeError, FileNotFoundError)), argv)


if __name__ == '__main__':
    sys.exit(main())
