"""Rename the released Diffusion Hyperfeatures aggregation network into this toolkit's keys.

The one rule: this tool never unpickles. The release (``g-luo/diffusion-hyperfeatures``:
``aggregation_network.pt``, ``aggregation_network_one-step.pt``, ``..._sdv2-1.pt``) is a torch
pickle; make it safe once with ``tools/convert/legacy_checkpoint.py`` and pass its output here:

    python tools/convert/legacy_checkpoint.py aggregation_network_one-step.pt \\
        checkpoints/hyperfeatures/one-step-raw.safetensors --trust-this-file
    python tools/convert/hyperfeatures_aggregation.py \\
        checkpoints/hyperfeatures/one-step-raw.safetensors \\
        checkpoints/hyperfeatures/aggregation_network_one-step.safetensors

The output (``.safetensors``, written atomically) holds the ``HyperfeatureExtractor``'s
aggregation network under ``--prefix`` (default ``extractor.aggregation.``, the keys of a
``CorrespondenceModel``, so it is a config's ``load_from`` or ``tools/test.py``'s CHECKPOINT).
It is checked to load strictly into a ``HyperfeatureAggregation`` of the shapes it implies,
which the tool prints (layers, channels, timesteps: 12 layers x 11 timesteps is the full model,
x 1 the one-step model); the extractor's ``layers`` and ``save_steps`` must match them.
"""
import os
import sys

PROG = 'tools/convert/hyperfeatures_aggregation.py'
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS_DIR = os.path.join(REPO_ROOT, 'tools')
if TOOLS_DIR not in sys.path:
    sys.path.append(TOOLS_DIR)  # appended: tools/test.py must not shadow anything
import _cli  # noqa: E402

SOURCE_SUFFIXES = ('.safetensors', '.pth', '.pt')


def parse_args(argv=None):
    import argparse
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog='Exit codes: 0 converted, 1 the input could not be '
                                 'converted or written, 2 a usage error.')
    parser.add_argument('checkpoint', help='the released aggregation network, made safe by '
                        'tools/convert/legacy_checkpoint.py (.safetensors, or its weights-only '
                        '.pth/.pt)')
    parser.add_argument('out', help='output .safetensors file')
    parser.add_argument('--prefix', default='extractor.aggregation.',
                        help='prepended to every key (default: %(default)s, a '
                        'CorrespondenceModel\'s; "aggregation." for a bare HyperfeatureExtractor, '
                        '"" for a HyperfeatureAggregation)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing OUT')
    args = parser.parse_args(argv)
    if not args.checkpoint.endswith(SOURCE_SUFFIXES):
        parser.error(f'checkpoint {args.checkpoint!r} must be a .safetensors/.pth/.pt file '
                     f'written by tools/convert/legacy_checkpoint.py (the released .pt itself '
                     f'is a pickle: convert it with that tool first)')
    if not args.out.endswith('.safetensors'):
        parser.error(f'output {args.out!r} must end in .safetensors')
    if os.path.exists(args.out) and not args.overwrite:
        parser.error(f'output {args.out!r} already exists; pass --overwrite to replace it')
    return args


def main(argv=None):
    args = parse_args(argv)
    _cli.make_repo_importable()
    _cli.check_local_file(args.checkpoint, 'Checkpoint')
    from safetensors.torch import load_file, save_file

    from common.io import atomic_path, load_checkpoint
    from correspondence.models.hyperfeatures import (HyperfeatureAggregation,
                                                     convert_reference_state_dict)
    state = load_checkpoint(args.checkpoint)  # safe: weights_only / safetensors
    if isinstance(state, dict) and isinstance(state.get('state_dict'), dict):
        state = state['state_dict']  # legacy_checkpoint.py's .pth layout
    try:
        renamed, info = convert_reference_state_dict(state)
    except ValueError as err:
        raise _cli.RunError(f'{args.checkpoint}: {err}') from None
    groups = 32 if info['projection_dim'] % 128 == 0 else 1  # GroupNorm shapes ignore groups
    agg = HyperfeatureAggregation(info['in_channels'], info['num_timesteps'],
                                  info['projection_dim'], num_norm_groups=groups)
    try:
        agg.load_state_dict(renamed, strict=True)
    except RuntimeError as err:  # e.g. a shortcut where the channels do not change
        raise _cli.RunError(f'{args.checkpoint}: the renamed weights do not fit a '
                            f'HyperfeatureAggregation of {info}: {err}') from None
    tensors = {args.prefix + k: v.detach().cpu().contiguous() for k, v in renamed.items()}
    with atomic_path(args.out) as tmp:
        save_file(tensors, tmp, metadata={'format': 'pt', 'converted_from':
                                          os.path.basename(args.checkpoint)})
        back = load_file(tmp)
        if set(back) != set(tensors) or any(not back[k].equal(tensors[k]) for k in tensors):
            raise _cli.RunError(f'{args.out}: the written file does not read back equal.')
    n_l, n_t = len(info['in_channels']), info['num_timesteps']
    print(f'Wrote {args.out}: {len(tensors)} tensors; {n_l} layers (channels '
          f'{info["in_channels"]}) x {n_t} timesteps -> {info["projection_dim"]} channels. Use '
          f'it with a HyperfeatureExtractor of {n_l} layers and {n_t} save_steps (load_from, or '
          f'tools/test.py CONFIG {args.out}).')


if __name__ == '__main__':
    sys.exit(_cli.run_cli(PROG, main))
