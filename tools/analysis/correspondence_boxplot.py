r"""Box plots of keypoint error distances, per category, extractors side by side (e.g. SD vs DINO).

    python tools/analysis/correspondence_boxplot.py SD.json DINO.json --labels SD DINO --out DIR \
        [--per category|all] [--frame protocol|original] [--protocol NAME] [--alpha 0.1]

Each DUMP.json is the per-pair dump ``python tools/test.py CONFIG --out DUMP.json`` writes
(``PCKMetric``: ``alphas``, ``protocols``, ``pairs``, ``metrics``). All dumps must hold the same
pairs (same ids, same number of keypoints each): box plots of different pair sets would compare
nothing.

For every keypoint of every pair, from the dump alone:

    distance     the pixel error. --frame protocol (default): as the protocol measured it, in its
                 frame (original pixels for 'dift'; the 840 padded frame for 'sd_dino'), the
                 dump's ``distances``. --frame original: |pred_kps - trg_kps| in original target
                 pixels, recomputed from the dumped keypoints.
    normalised   the protocol's distance / its threshold length L = threshold(alpha) / alpha (in
                 the protocol's frame): 1.0 is one bounding-box side (or whatever L the protocol
                 uses), 0.1 the PCK@0.1 radius.
    correct      distance compare threshold(alpha) of the protocol (its ``<`` or ``<=``): the
                 recomputed PCK@alpha (per point) equals the dump's ``per_point`` metric.

Writes ``DIR/boxplot.png`` (top: pixels, bottom: normalised; one group per category with
``--per category`` (default) or one group ``all``; one box per extractor in each group; the
normalised panel marks alpha) and ``DIR/error_stats.json``: per group (``all`` always, each
category with ``--per category``) and extractor, for both distances: count, median, q1, q3
(numpy's linear percentiles), mean, min, max; and ``pck@alpha`` (percent of keypoints).
"""
import json
import os.path as osp
import sys

_TOOLS = osp.dirname(osp.dirname(osp.abspath(__file__)))
if _TOOLS not in sys.path:  # run as a script: first; imported (tests): last, shadowing nothing
    sys.path.insert(0 if __name__ == '__main__' else len(sys.path), _TOOLS)
import _cli  # noqa: E402

_cli.make_repo_importable()

PROG = 'tools/analysis/correspondence_boxplot.py'


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0],
                                 epilog='See the top of this file for the exact definitions.')
    parser.add_argument('dumps', nargs='+', metavar='DUMP.json',
                        help='per-pair dumps of tools/test.py CONFIG --out DUMP.json')
    parser.add_argument('--labels', nargs='+', metavar='NAME',
                        help='one name per dump (default: the file names without .json)')
    parser.add_argument('--out', required=True, metavar='DIR',
                        help='folder for boxplot.png and error_stats.json')
    parser.add_argument('--per', choices=['category', 'all'], default='category',
                        help='one box group per category (default) or one for all pairs')
    parser.add_argument('--frame', choices=['protocol', 'original'], default='protocol',
                        help="pixel distances in the protocol's frame (default) or in original "
                        'target pixels')
    parser.add_argument('--protocol', metavar='NAME',
                        help='the PCK protocol of the dumps to use (default: the first one of '
                        'the first dump)')
    parser.add_argument('--alpha', type=float, default=0.1,
                        help='PCK alpha recomputed and marked (default 0.1)')
    args = parser.parse_args(argv)
    if args.labels is not None and len(args.labels) != len(args.dumps):
        parser.error(f'--labels has {len(args.labels)} names for {len(args.dumps)} dumps; give '
                     'one name per dump, in the same order')
    if not args.alpha > 0:
        parser.error(f'--alpha {args.alpha}: use a positive fraction such as 0.1')
    if args.labels is None:
        stems = [osp.splitext(osp.basename(p))[0] for p in args.dumps]
        if len(set(stems)) != len(stems):  # e.g. sd/pairs.json and dino/pairs.json
            stems = [osp.basename(osp.dirname(osp.abspath(p))) + '/' + s
                     for p, s in zip(args.dumps, stems)]
        args.labels = stems
    if len(set(args.labels)) != len(args.labels):
        parser.error(f'--labels {args.labels}: each dump needs its own name')
    return args


# ------------------------------------------------------------------------------- reading
def read_dump(path):
    """The dump as a dict; a one-paragraph error unless it is a tools/test.py per-pair dump."""
    if not osp.isfile(path):
        raise _cli.UsageError(f'{path!r} does not exist (relative paths are resolved from the '
                              'current folder). Pass the file `tools/test.py CONFIG --out '
                              'FILE.json` wrote.')
    try:
        with open(path, encoding='utf-8') as f:
            dump = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _cli.UsageError(f'{path!r} is not readable JSON ({err}); expected the per-pair '
                              'dump of `tools/test.py CONFIG --out FILE.json`.') from None
    if not isinstance(dump, dict) or not isinstance(dump.get('pairs'), list) \
            or not isinstance(dump.get('protocols'), dict):
        keys = sorted(dump) if isinstance(dump, dict) else type(dump).__name__
        raise _cli.UsageError(
            f'{path!r} is not a per-pair dump: expected a JSON object with "protocols" and '
            f'"pairs" (what `tools/test.py CONFIG --out FILE.json` writes when the test metric is '
            f'a PCKMetric), got {keys}. A metrics-only JSON has no keypoints to plot.')
    if not dump['pairs']:
        raise _cli.UsageError(f'{path!r} holds no pairs; evaluate a non-empty test set.')
    return dump


def check_same_pairs(dumps, paths):
    """All dumps hold the same pair ids with the same number of keypoints each."""
    def signature(dump):
        return {p['pair_id']: len(p['trg_kps']) for p in dump['pairs']}

    first = signature(dumps[0])
    for dump, path in zip(dumps[1:], paths[1:]):
        other = signature(dump)
        missing = sorted(set(first) - set(other))
        extra = sorted(set(other) - set(first))
        counts = sorted(k for k in set(first) & set(other) if first[k] != other[k])
        if missing or extra or counts:
            detail = []
            if missing:
                detail.append(f'{len(missing)} pairs of {paths[0]!r} are missing (e.g. '
                              f'{missing[:3]})')
            if extra:
                detail.append(f'{len(extra)} pairs are not in {paths[0]!r} (e.g. {extra[:3]})')
            if counts:
                detail.append(f'{len(counts)} pairs have other keypoint counts (e.g. '
                              f'{counts[:3]})')
            raise _cli.UsageError(
                f'{path!r} and {paths[0]!r} hold different pair sets ({len(other)} vs '
                f'{len(first)} pairs): {"; ".join(detail)}. Box plots compare extractors on '
                'the same keypoints: evaluate every config on the same test split (same '
                'dataset, filters and sampling) before plotting.')


def choose_protocol(dumps, paths, wanted):
    names = list(dumps[0]['protocols'])
    name = wanted or names[0]
    for dump, path in zip(dumps, paths):
        if name not in dump['protocols']:
            raise _cli.UsageError(
                f'protocol {name!r} is not in {path!r} (it has {list(dump["protocols"])}); pass '
                '--protocol with a protocol every dump reports.')
    return name


def keypoint_errors(dump, protocol, alpha, frame='protocol'):
    """Per keypoint: ``(category, distance, normalised, correct)`` arrays over all pairs."""
    import numpy as np
    key = f'pck@{alpha:g}'
    cats, dist, norm, correct = [], [], [], []
    for pair in dump['pairs']:
        proto = pair['protocols'][protocol]
        d = np.asarray(proto['distances'], dtype=np.float64).reshape(-1)
        thresholds = proto['thresholds']
        if not thresholds:
            raise _cli.UsageError(f'pair {pair["pair_id"]!r} has no thresholds for protocol '
                                  f'{protocol!r}; re-run tools/test.py with this toolkit.')
        some_key, some_thr = next(iter(thresholds.items()))
        length = float(some_thr) / float(some_key[len('pck@'):])
        thr = float(thresholds[key]) if key in thresholds else alpha * length
        ok = d <= thr if proto.get('compare', '<=') == '<=' else d < thr
        if frame == 'original':
            pred = np.asarray(pair['pred_kps'], dtype=np.float64).reshape(-1, 2)
            trg = np.asarray(pair['trg_kps'], dtype=np.float64).reshape(-1, 2)
            pixels = np.linalg.norm(pred - trg, axis=1)
        else:
            pixels = d
        cats += [pair['category']] * len(d)
        dist.append(pixels)
        norm.append(d / length if length > 0 else np.full_like(d, np.inf))
        correct.append(ok)
    cat = np.asarray(cats, dtype=object)
    return cat, np.concatenate(dist), np.concatenate(norm), np.concatenate(correct)


def summary(values):
    import numpy as np
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return dict(count=0)
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return dict(count=int(values.size), median=float(median), q1=float(q1), q3=float(q3),
                mean=float(values.mean()), min=float(values.min()), max=float(values.max()))


def error_stats(errors, labels, per, alpha):
    """``{group: {label: {pixels: {...}, normalised: {...}, pck@alpha: percent}}}``."""
    import numpy as np
    first_cats = errors[labels[0]][0]
    groups = ['all']
    if per == 'category':
        groups += list(dict.fromkeys(first_cats.tolist()))
    stats = {}
    for group in groups:
        stats[group] = {}
        for label in labels:
            cat, dist, norm, correct = errors[label]
            mask = np.ones(len(cat), dtype=bool) if group == 'all' else cat == group
            stats[group][label] = {
                'pixels': summary(dist[mask]),
                'normalised': summary(norm[mask]),
                f'pck@{alpha:g}': float(100 * correct[mask].mean()) if mask.any() else None}
    return stats


# ------------------------------------------------------------------------------- drawing
def draw(errors, labels, per, alpha, path, protocol, frame):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np

    from common.io import atomic_path
    cats = errors[labels[0]][0]
    groups = list(dict.fromkeys(cats.tolist())) if per == 'category' else ['all']
    n = len(labels)
    width = 0.8 / n
    colours = plt.get_cmap('tab10').colors
    fig, axes = plt.subplots(2, 1, figsize=(max(5.0, 1.0 + 0.45 * n * len(groups) + 0.6),
                                            7.0), sharex=True)
    for row, (ax, which) in enumerate(zip(axes, ('pixels', 'normalised'))):
        for k, label in enumerate(labels):
            cat, dist, norm, _ = errors[label]
            values = dist if which == 'pixels' else norm
            data = [values if g == 'all' else values[cat == g] for g in groups]
            positions = np.arange(len(groups)) + (k - (n - 1) / 2) * width
            parts = ax.boxplot(data, positions=positions, widths=width * 0.9, patch_artist=True,
                               showfliers=True, flierprops=dict(markersize=2),
                               medianprops=dict(color='black'))
            for box in parts['boxes']:
                box.set_facecolor(colours[k % len(colours)])
                box.set_alpha(0.75)
            ax.plot([], [], 's', color=colours[k % len(colours)], label=label)
        if which == 'pixels':
            unit = "the protocol's frame" if frame == 'protocol' else 'original target'
            ax.set_ylabel(f'error (pixels, {unit})')
            ax.legend(fontsize=8, loc='upper right')
        else:
            ax.axhline(alpha, color='grey', linestyle='--', linewidth=1)
            ax.set_ylabel(f'error / threshold length (alpha={alpha:g} dashed)')
    axes[-1].set_xticks(range(len(groups)), groups, rotation=45 if len(groups) > 6 else 0,
                        ha='right' if len(groups) > 6 else 'center')
    axes[-1].set_xlabel('category' if per == 'category' else '')
    axes[0].set_title(f'keypoint errors, protocol {protocol}', fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=110)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    import os

    from common.io import atomic_path
    dumps = [read_dump(p) for p in args.dumps]
    check_same_pairs(dumps, args.dumps)
    protocol = choose_protocol(dumps, args.dumps, args.protocol)
    # the same pair order for every dump (the first dump's)
    order = [p['pair_id'] for p in dumps[0]['pairs']]
    for dump in dumps[1:]:
        by_id = {p['pair_id']: p for p in dump['pairs']}
        dump['pairs'] = [by_id[i] for i in order]
    errors = {label: keypoint_errors(dump, protocol, args.alpha, args.frame)
              for label, dump in zip(args.labels, dumps)}
    stats = error_stats(errors, args.labels, args.per, args.alpha)
    os.makedirs(args.out, exist_ok=True)
    report = dict(dumps=dict(zip(args.labels, args.dumps)), protocol=protocol, frame=args.frame,
                  alpha=args.alpha, per=args.per, num_pairs=len(order),
                  quartiles='numpy.percentile, linear interpolation', stats=stats)
    with atomic_path(osp.join(args.out, 'error_stats.json')) as tmp, open(tmp, 'w') as f:
        json.dump(report, f, indent=1)
    draw(errors, args.labels, args.per, args.alpha, osp.join(args.out, 'boxplot.png'), protocol,
         args.frame)
    key = f'pck@{args.alpha:g}'
    print(f'{"extractor":<20}{"median px":>12}{"median norm":>14}{key + " %":>12}')
    for label in args.labels:
        row = stats['all'][label]
        print(f'{label:<20}{row["pixels"]["median"]:>12.2f}{row["normalised"]["median"]:>14.3f}'
              f'{row[key]:>12.2f}')
    print(f'{PROG}: wrote {osp.join(args.out, "boxplot.png")} and '
          f'{osp.join(args.out, "error_stats.json")}')
    return report


def cli(argv=None):
    return _cli.run_cli(PROG, main, argv)


if __name__ == '__main__':
    sys.exit(cli())
