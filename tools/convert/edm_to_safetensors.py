"""Convert an NVlabs/edm network pickle into config.json + model.safetensors, running none of it.

    python tools/convert/edm_to_safetensors.py edm-cifar10-32x32-cond-vp.pkl \\
        checkpoints/edm/cifar10-cond-vp [--key ema] [--overwrite]

EDM's ``.pkl`` files (released models and ``network-snapshot-*.pkl``) embed the Python source of
their network classes, and ``pickle.load`` executes that source; a pickle can also call any other
function. This tool reads the file with a restricted unpickler
(``generation_dmd.convert.edm_pickle``) that only rebuilds tensors and containers and keeps
EDM's class records as data: no code from the file runs, and a file that asks for anything else
(``os.system``, ``exec``, ...) is refused with nothing written.

Written atomically into OUT_DIR (all or nothing):

* ``config.json``: ``{"class_name": "EDMPrecond", "init_kwargs": {...}, "model": {"class_name":
  "SongUNet", "init_kwargs": {...}}, "source": "converted from <file> by ...", "pickle_key":
  "ema", "edm_module_src_sha256": ...}`` (the preconditioner's constructor arguments, the wrapped
  UNet's under ``model``);
* ``model.safetensors``: the network's ``state_dict`` (keys as in EDM, e.g.
  ``model.enc.32x32_conv.weight``).

``--key`` chooses the entry of the pickle's dict (``ema``, EDM's exponential moving average, by
default).
"""
import os
import os.path as osp
import sys

PROG = 'tools/convert/edm_to_safetensors.py'
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS_DIR = osp.join(REPO_ROOT, 'tools')
if TOOLS_DIR not in sys.path:
    sys.path.append(TOOLS_DIR)  # appended: tools/test.py must not shadow anything
import _cli  # noqa: E402

WARNING = (f'{PROG}: WARNING: pickle files can run arbitrary code when opened with pickle.load or '
           f'torch.load(weights_only=False); never open an untrusted .pkl that way. This tool '
           f'reads it with a restricted unpickler that runs nothing from the file (EDM\'s embedded '
           f'source is kept as text) and refuses any other request.')


def parse_args(argv=None):
    import argparse
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog='Exit codes: 0 converted, 1 the file could not be '
                                 'converted or written, 2 a usage error.')
    parser.add_argument('pickle', metavar='IN.pkl', help='the EDM network pickle')
    parser.add_argument('out_dir', metavar='OUT_DIR',
                        help='output folder for config.json and model.safetensors')
    parser.add_argument('--key', default='ema', help='entry of the pickle\'s dict holding the '
                        'network (default: %(default)s)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing OUT_DIR (only once the new one is complete)')
    args = parser.parse_args(argv)
    if not args.key.strip():
        parser.error('--key is empty: name the entry holding the network, e.g. --key ema')
    if not osp.isfile(args.pickle):
        parser.error(f'IN.pkl {args.pickle!r} does not exist or is not a file (relative paths '
                     f'are resolved from {os.getcwd()!r})')
    if osp.lexists(args.out_dir) and not args.overwrite:
        parser.error(f'OUT_DIR {args.out_dir!r} already exists; pass --overwrite to replace it '
                     f'or choose another folder')
    return args


def _main(argv=None):
    args = parse_args(argv)
    print(WARNING, file=sys.stderr, flush=True)
    _cli.make_repo_importable()
    from common.io.atomic_folder import FolderExistsError
    from generation_dmd.convert.edm_pickle import EDMPickleError, convert_edm_pickle
    try:
        config, state = convert_edm_pickle(args.pickle, args.out_dir, key=args.key,
                                           overwrite=args.overwrite)
    except (EDMPickleError, FolderExistsError) as err:
        raise _cli.RunError(str(err)) from None
    except OSError as err:
        raise _cli.RunError(f'could not write {args.out_dir!r} ({err}); nothing was left '
                            f'behind.') from None
    inner = config.get('model', {}).get('class_name')
    values = sum(t.numel() for t in state.values())
    print(f'Wrote {args.out_dir}: {config["class_name"]}' + (f' ({inner})' if inner else '') +
          f', {len(state)} tensors ({values} values), from entry {args.key!r} of '
          f'{args.pickle}.')


def main(argv=None):
    return _cli.run_cli(PROG, _main, argv)


if __name__ == '__main__':
    sys.exit(main())
