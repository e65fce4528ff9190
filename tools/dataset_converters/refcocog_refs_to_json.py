"""Convert REFER's RefCOCOg refs pickle (``refs(google).p``) to JSON, once, without running it.

Usage::

    python tools/dataset_converters/refcocog_refs_to_json.py IN.p OUT.json [--overwrite]

The pickle is read by the restricted unpickler of ``image_text_matching.datasets.safe_pickle``:
only lists, dicts, strings and numbers come out, and a file that asks for anything else (a
function or class: code that would run under ``pickle.load``) is refused before anything in it
runs; then nothing is written. ``OUT.json`` holds the same list of refs (``ref_id``,
``image_id``, ``sentences``, ...), written atomically; ``RefCOCOgDataset(refs='OUT.json')``
reads it exactly as the pickle.

Exit status: 0 written; 1 the input is missing, not a plain-data pickle or not REFER refs, or
OUT exists without ``--overwrite``; 2 a usage error.
"""
import os.path as osp
import sys

_REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)
_TOOLS_DIR = osp.join(_REPO_ROOT, 'tools')
if _TOOLS_DIR not in sys.path:
    sys.path.append(_TOOLS_DIR)  # appended: tools/test.py must not shadow anything
import _cli  # noqa: E402

PROG = 'tools/dataset_converters/refcocog_refs_to_json.py'


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    parser.add_argument('refs', help="REFER's refs pickle, e.g. data/refcocog/refs(google).p")
    parser.add_argument('out', help='the JSON file to write (atomically), e.g. '
                        'data/refcocog/refs(google).json')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing OUT')
    args = parser.parse_args(argv)
    if not args.out.lower().endswith('.json'):
        parser.error(f'OUT {args.out!r} must end in .json')
    return args


def convert(refs_path, out_path, overwrite=False):
    """Read ``refs_path`` restrictedly, check it is REFER refs, write ``out_path``; returns the
    number of refs. Raises ``ITMDataError`` (nothing written) for a bad input."""
    import json

    from image_text_matching.datasets.base import ITMDataError
    from image_text_matching.datasets.refcocog import read_refs
    if osp.exists(out_path) and not overwrite:
        raise ITMDataError(f'{out_path} exists; pass --overwrite to replace it.')
    if refs_path.lower().endswith('.json'):
        raise ITMDataError(f'{refs_path} is already JSON; RefCOCOgDataset reads it as it is.')
    refs = read_refs(refs_path)

    def plain(value):  # what a pickle may hold beyond JSON's types
        if isinstance(value, (set, frozenset)):
            return sorted(value, key=repr)
        if isinstance(value, bytes):
            return value.decode('utf-8', errors='replace')
        raise TypeError(f'{type(value).__name__} is not JSON serializable')
    from common.io import atomic_write_bytes  # after the checks: `common` imports are slow
    atomic_write_bytes(out_path, json.dumps(refs, ensure_ascii=False, default=plain)
                       .encode('utf-8'))
    return len(refs)


def main(argv=None):
    args = parse_args(argv)
    from image_text_matching.datasets.base import ITMDataError
    try:
        count = convert(args.refs, args.out, overwrite=args.overwrite)
    except ITMDataError as err:
        raise _cli.RunError(str(err)) from err
    print(f'{PROG}: wrote {count} refs to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(_cli.run_cli(PROG, main))
