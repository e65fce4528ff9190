"""Compute FID reference statistics (mu, sigma) of real images into an .npz file.

    python tools/compute_fid_reference.py SOURCE OUT.npz --weights PATH
        [--feature-extractor inception|CONFIG.py] [--max-images N] [--batch-size B]
        [--allow-pickle] [--cifar-split train|test] [--overwrite]

SOURCE is a folder of PNG/JPG images (searched recursively), a uint8 .npy/.npz array ([N, H, W,
C] or [N, C, H, W]), or CIFAR-10's python folder ``cifar-10-batches-py`` (the TRAIN batches are
the FID protocol's reference). The one rule: CIFAR-10's batch files are Python pickles and are
refused unless you pass --allow-pickle for files from the official CIFAR site (then they are
read by an unpickler that can only rebuild numpy arrays).

``--feature-extractor inception`` (default) is the protocol's TF-Inception network through
torch-fidelity, with the weights file given by --weights (nothing is downloaded; docs/fid.md
says where to get it). ``--feature-extractor CONFIG.py`` builds the ``feature_extractor`` dict
of that config (e.g. a ``ClassifierFeatureExtractor`` for a proxy). OUT.npz holds ``mu``,
``sigma`` (float64) and ``metadata`` (count, extractor, source), written atomically; EDM's
``fid.py``, pytorch-fid and torch-fidelity read the same keys.

The arguments are parsed before torch, mmengine or ``common`` is imported, so ``--help`` and
argument errors answer at once.
"""
import os
import os.path as osp
import sys

if osp.dirname(osp.abspath(__file__)) not in sys.path:  # imported, not run as a script
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _cli  # noqa: E402

_cli.make_repo_importable()

PROG = 'tools/compute_fid_reference.py'


def _count(minimum, name):
    def parse(text):
        import argparse
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected an integer, got {text!r}') from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f'{name} must be at least {minimum}, got {value}')
        return value
    return parse


def parse_args(argv=None):
    import argparse
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog='Exit codes: 0 written, 1 the source, weights or output '
                                 'could not be read or written, 2 a usage error.')
    parser.add_argument('source', metavar='SOURCE',
                        help='folder of images, uint8 .npy/.npz array, or cifar-10-batches-py')
    parser.add_argument('out', metavar='OUT.npz', help='output statistics file')
    parser.add_argument('--feature-extractor', default='inception', metavar='inception|CONFIG.py',
                        help='the protocol\'s Inception (default) or a config file with a '
                        '`feature_extractor` dict (a proxy)')
    parser.add_argument('--weights', metavar='PATH',
                        help='torch-fidelity\'s weights-inception-2015-12-05-6726825d.pth '
                        '(required for --feature-extractor inception)')
    parser.add_argument('--max-images', type=_count(2, '--max-images'), metavar='N',
                        help='use only the first N images (default: all; the protocol uses the '
                        '50000 CIFAR-10 train images)')
    parser.add_argument('--batch-size', type=_count(1, '--batch-size'), default=128,
                        metavar='B', help='images per forward pass (default %(default)s)')
    parser.add_argument('--allow-pickle', action='store_true',
                        help='read CIFAR-10\'s pickled python batches (only files from the '
                        'official CIFAR site)')
    parser.add_argument('--cifar-split', choices=['train', 'test'], default='train',
                        help='CIFAR-10 batches to read: train (the protocol\'s reference, '
                        'default) or test (a proxy, labelled as such in the metadata)')
    parser.add_argument('--device', help='device for the extractor (default: cuda if available)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing OUT.npz')
    args = parser.parse_args(argv)
    if not args.out.endswith('.npz'):
        parser.error(f'OUT.npz {args.out!r} must end in .npz (mu and sigma are stored as an '
                     f'.npz archive)')
    if args.feature_extractor == 'inception':
        if not args.weights:
            parser.error('--feature-extractor inception needs --weights PATH (torch-fidelity\'s '
                         'weights-inception-2015-12-05-6726825d.pth; see docs/fid.md)')
    elif not args.feature_extractor.endswith('.py'):
        parser.error(f'--feature-extractor {args.feature_extractor!r}: expected "inception" or '
                     f'a config file (.py) with a feature_extractor dict')
    if not osp.exists(args.source):
        parser.error(f'SOURCE {args.source!r} does not exist (relative paths are resolved from '
                     f'{os.getcwd()!r})')
    if osp.exists(args.out) and not args.overwrite:
        parser.error(f'OUT.npz {args.out!r} already exists; pass --overwrite to replace it')
    return args


def write_reference(source, out, extractor, batch_size=128, max_images=None, allow_pickle=False,
                    cifar_split='train', show_progress=False):
    """Compute ``extractor``'s statistics over ``source`` and write them to ``out`` (.npz).

    ``extractor``: any feature extractor object (``generation_dmd.evaluation``'s, or a test's).
    Returns the metadata written next to ``mu`` and ``sigma``.
    """
    from generation_dmd.evaluation.frechet import save_reference_stats
    from generation_dmd.evaluation.sources import (describe_source, reference_statistics,
                                                   source_kind)
    kind = source_kind(source)
    stats = reference_statistics(source, extractor, batch_size=batch_size, max_images=max_images,
                                 allow_pickle=allow_pickle, cifar_split=cifar_split,
                                 show_progress=show_progress)
    mu, sigma = stats.mean_cov()
    metadata = dict(count=stats.count, extractor=extractor.name,
                    standard_extractor=bool(getattr(extractor, 'standard', False)),
                    source=describe_source(source), source_kind=kind, created_by=PROG)
    if kind == 'cifar10-python':
        metadata['cifar_split'] = cifar_split
        if cifar_split != 'train':
            metadata['proxy_note'] = (f'CIFAR-10 {cifar_split} split, not the protocol\'s '
                                      f'train-set reference')
    save_reference_stats(out, mu, sigma, metadata)
    return metadata


def build_extractor(args):
    if args.feature_extractor == 'inception':
        from generation_dmd.evaluation import InceptionFeatureExtractor
        return InceptionFeatureExtractor(args.weights, batch_size=args.batch_size,
                                         device=args.device)
    cfg = _cli.load_config(args.feature_extractor)
    if not _cli.is_mapping(cfg.get('feature_extractor')):
        raise _cli.UsageError(
            f'{args.feature_extractor}: expected a `feature_extractor` dict in the config (e.g. '
            f"feature_extractor=dict(type='ClassifierFeatureExtractor', model=..., "
            f"checkpoint=..., feature_layer=...)), but it has {cfg.get('feature_extractor')!r}.")
    from generation_dmd.evaluation import build_feature_extractor
    extractor_cfg = cfg.feature_extractor.to_dict()
    if args.device:
        extractor_cfg['device'] = args.device
    return build_feature_extractor(extractor_cfg)


def main(argv=None):
    args = parse_args(argv)
    import warnings

    import generation_dmd.evaluation as evaluation
    from common.io import CheckpointLoadError, UnsafeCheckpointError
    known = (evaluation.ImageSourceError, evaluation.FeatureExtractorError,
             evaluation.FrechetError, CheckpointLoadError, UnsafeCheckpointError)
    if args.allow_pickle:
        print(f'{PROG}: WARNING: --allow-pickle: CIFAR-10\'s python batches are pickles; they '
              f'are read with an unpickler that only rebuilds numpy arrays. Use only files from '
              f'the official CIFAR site.', file=sys.stderr, flush=True)
        warnings.filterwarnings('ignore', message='reading the pickled CIFAR-10 batches')
    try:
        extractor = build_extractor(args)
        metadata = write_reference(args.source, args.out, extractor, batch_size=args.batch_size,
                                   max_images=args.max_images, allow_pickle=args.allow_pickle,
                                   cifar_split=args.cifar_split, show_progress=True)
    except known as err:
        raise _cli.RunError(str(err)) from None
    note = ''
    if not metadata['standard_extractor'] or metadata['count'] < 50000 or \
            metadata.get('proxy_note'):
        note = (' (a PROXY reference: the protocol is the 50000 CIFAR-10 train images with the '
                'Inception extractor; metrics computed against it are labelled proxy_FD)')
    print(f'{args.out}: mu/sigma of {metadata["count"]} images, extractor '
          f'{metadata["extractor"]}{note}')


if __name__ == '__main__':
    sys.exit(_cli.run_cli(PROG, main))
