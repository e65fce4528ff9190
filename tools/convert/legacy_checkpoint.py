"""Convert a trusted legacy checkpoint that needs pickle into one that loads without it.

The toolkit's loader (``common.io.load_checkpoint``) refuses checkpoints holding pickled Python
objects other than tensors and mmengine/numpy metadata, because unpickling them can run code.
This tool is the one explicit place where such a file is unpickled, once, on your request:

    python tools/convert/legacy_checkpoint.py IN.pth OUT.safetensors --trust-this-file
    python tools/convert/legacy_checkpoint.py IN.pth OUT.pth --trust-this-file

The output keeps the model weights (the tensors of the ``state_dict``/``model`` entry, of the
``aggregation_network`` entry of Diffusion Hyperfeatures' releases, or of the file itself; a
pickled ``nn.Module`` gives its ``state_dict()``):

* ``OUT.safetensors``: the tensors; the checkpoint's ``meta`` (as JSON, unknown objects as their
  ``repr``) in the safetensors metadata under ``meta``.
* ``OUT.pth``/``OUT.pt``: a weights-only torch checkpoint ``{'state_dict': ..., 'meta': ...}``.

Optimizer and scheduler states are not converted (a converted file can be ``load_from`` or an
``init_cfg`` checkpoint, not a resume point). The output is checked to load through the safe
loader and written atomically.

Without ``--trust-this-file`` nothing is read: unpickling runs whatever code the file holds, so
only convert files whose origin you trust (e.g. the official release, checked against its
published hash).
"""
import argparse
import json
import os
import os.path as osp
import sys

PROG = 'tools/convert/legacy_checkpoint.py'
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRUST_FLAG = '--trust-this-file'
SAFETENSORS_SUFFIXES = ('.safetensors', )
TORCH_SUFFIXES = ('.pth', '.pt')


class ConversionError(Exception):
    """A problem with the input or output the user can fix (exit code 1)."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Exit codes: 0 converted, 1 the input could not be converted or written, '
        f'2 a usage error (including a missing {TRUST_FLAG}).')
    parser.add_argument('checkpoint', help='the legacy checkpoint (a torch.save/pickle file)')
    parser.add_argument('out', help='output file: .safetensors (tensors + JSON metadata) or '
                        '.pth/.pt (a weights-only torch checkpoint)')
    parser.add_argument(TRUST_FLAG, dest='trusted', action='store_true',
                        help='unpickle CHECKPOINT with weights_only=False. This runs any code '
                        'the file contains: give it only for files from a source you trust')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing OUT')
    return parser.parse_args(argv)


def refusal_message(path):
    return (f'refusing to convert {path!r} without {TRUST_FLAG}. Converting unpickles the file '
            f'with weights_only=False, and a pickle can run arbitrary code on this machine '
            f'(a checkpoint can carry a payload that, say, deletes or uploads files). Only if '
            f'you trust where the file comes from (e.g. the official release, checked against '
            f'its published hash), rerun with {TRUST_FLAG}; the converted file then loads '
            f'safely, without pickle.')


def _plain(value, depth=0):
    """A JSON-friendly copy of checkpoint metadata (unknown objects become their repr)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if depth > 8:
        return repr(value)
    if isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    if hasattr(value, 'tolist') and hasattr(value, 'shape') and getattr(value, 'ndim', 1) == 0:
        return value.tolist()  # numpy/torch scalars
    return repr(value)


def extract_weights(ckpt):
    """``(tensors, skipped, meta)`` from a legacy checkpoint object."""
    import torch
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    source = ckpt
    if isinstance(ckpt, dict):
        for key in ('state_dict', 'model', 'aggregation_network'):
            if key in ckpt and isinstance(ckpt[key], (dict, torch.nn.Module)):
                source = ckpt[key]
                break
    if isinstance(source, torch.nn.Module):
        source = source.state_dict()
    if not isinstance(source, dict):
        raise ConversionError(
            f'the file holds a {type(source).__name__}, not a state dict, a checkpoint dict '
            f'with a state_dict/model entry, or an nn.Module; convert it with your own script.')
    tensors, skipped = {}, []
    for key, value in source.items():
        if isinstance(value, torch.Tensor):
            # own, contiguous storage: safetensors refuses shared or strided tensors
            tensors[str(key)] = value.detach().to('cpu').clone().contiguous()
        else:
            skipped.append(str(key))
    if not tensors:
        raise ConversionError(f'the state dict holds no tensors (keys: {skipped[:10]}).')
    return tensors, skipped, _plain(meta) if meta is not None else {}


def _write(tensors, meta, out, source_name):
    """Write ``out`` atomically and check it loads without pickle before it replaces anything."""
    import torch

    from common.io import atomic_path, load_checkpoint
    with atomic_path(out) as tmp:
        if out.endswith(SAFETENSORS_SUFFIXES):
            from safetensors.torch import load_file, save_file
            save_file(tensors, tmp, metadata={
                'format': 'pt', 'converted_from': source_name, 'meta': json.dumps(meta)})
            loaded = load_file(tmp)
        else:
            torch.save({'state_dict': tensors, 'meta': meta}, tmp)
            loaded = load_checkpoint(tmp)['state_dict']  # the safe loader must accept it
        bad = [k for k in tensors if k not in loaded or not torch.equal(loaded[k], tensors[k])]
        if bad:
            raise ConversionError(f'the written file does not read back equal ({bad[:5]}).')


def main(argv=None):
    args = parse_args(argv)
    if not args.trusted:
        print(f'{PROG}: error: {refusal_message(args.checkpoint)}', file=sys.stderr)
        return 2
    if not args.out.endswith(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES):
        print(f'{PROG}: error: output {args.out!r} must end in .safetensors, .pth or .pt (the '
              f'extension chooses the format).', file=sys.stderr)
        return 2
    if osp.exists(args.out) and not args.overwrite:
        print(f'{PROG}: error: output {args.out!r} already exists; pass --overwrite to replace '
              f'it or choose another name.', file=sys.stderr)
        return 2
    if not osp.isfile(args.checkpoint):
        print(f'{PROG}: error: checkpoint {args.checkpoint!r} does not exist (relative paths are '
              f'resolved from {os.getcwd()!r}).', file=sys.stderr)
        return 1
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    import torch
    print(f'{PROG}: WARNING: unpickling {args.checkpoint!r} with weights_only=False because '
          f'{TRUST_FLAG} was given; any code in the file runs now.', file=sys.stderr, flush=True)
    try:
        try:
            ckpt = torch.load(args.checkpoint, map_location='cpu', weights_only=False)
        except (ImportError, AttributeError) as err:
            raise ConversionError(
                f'{args.checkpoint!r} needs a class that is not importable here ({err}). Run the '
                f'conversion where the code that wrote the file is installed (or on PYTHONPATH).'
            ) from None
        except Exception as err:  # noqa: BLE001 - any unpickling failure is the input's fault
            raise ConversionError(
                f'could not read {args.checkpoint!r} ({type(err).__name__}: {err}); it is '
                f'truncated or not a torch checkpoint.') from None
        tensors, skipped, meta = extract_weights(ckpt)
        _write(tensors, meta, args.out, osp.basename(args.checkpoint))
    except ConversionError as err:
        print(f'{PROG}: error: {args.checkpoint}: {err}', file=sys.stderr)
        return 1
    except OSError as err:
        print(f'{PROG}: error: could not write {args.out!r} ({err}); nothing was left behind.',
              file=sys.stderr)
        return 1
    params = sum(t.numel() for t in tensors.values())
    note = f'; skipped non-tensor entries: {", ".join(skipped[:10])}' if skipped else ''
    print(f'Wrote {args.out}: {len(tensors)} tensors ({params} values){note}. Use it as '
          f'load_from or init_cfg=dict(type=\'Pretrained\', checkpoint={args.out!r}).')
    return 0


if __name__ == '__main__':
    sys.exit(main())
