r"""PCK against input resolution: each config re-evaluated with its ResizePair size replaced.

    python tools/analysis/correspondence_resolution_sweep.py SD.py DINO.py --sizes 224 448 672 \
        --out DIR [--labels SD DINO] [--num-pairs N] [--preset P [P ...]] [--metric KEY] \
        [--batch-size B] [--device cpu|cuda] [--cfg-options KEY=VALUE ...]

The claim it tests: DINO degrades at low resolution, SD less. Each CONFIG is a zero-shot config
whose test pipeline has one ``ResizePair`` with a ``stretched`` or ``padded`` frame; its model
is built once and evaluated (the same computation as ``tools/test.py``, in this process) with
that ResizePair's ``size`` set to each ``--sizes`` value, everything else unchanged.

A size is rounded to the nearest multiple of the extractor's patch multiple when it has one
(DINOv2: its patch size, 14; a latent diffusion model: the VAE factor, 8; a fusion: the least
common multiple of its sources; raw pixels and random networks: none), so 224 stays 224 for
DINOv2 and 448 becomes 448; both the requested and the used size are reported. Sizes that round
to the same value are evaluated once. ``--cfg-options`` apply to every config.

Writes ``DIR/resolution.json`` (per config: the multiple and why, per size: requested, used,
every metric) and ``DIR/resolution.png`` (``--metric`` against the used size, one line per
config). ``--num-pairs N``: N pairs spread evenly over the split, the same pairs at every size.
"""
import json
import os.path as osp
import sys

_TOOLS = osp.dirname(osp.dirname(osp.abspath(__file__)))
if _TOOLS not in sys.path:  # run as a script: first; imported (tests): last, shadowing nothing
    sys.path.insert(0 if __name__ == '__main__' else len(sys.path), _TOOLS)
import _cli  # noqa: E402
from analysis._sweep_args import add_sweep_arguments, check_sweep_arguments  # noqa: E402

_cli.make_repo_importable()

PROG = 'tools/analysis/correspondence_resolution_sweep.py'


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0],
                                 epilog='See the top of this file for the choices it makes.')
    parser.add_argument('configs', nargs='+', metavar='CONFIG',
                        help='zero-shot configs with a ResizePair in their test pipeline')
    parser.add_argument('--sizes', nargs='+', type=int, required=True, metavar='S',
                        help='frame sizes (pixels, the side of the square frame)')
    parser.add_argument('--out', required=True, metavar='DIR',
                        help='folder for resolution.json and resolution.png')
    parser.add_argument('--labels', nargs='+', metavar='NAME',
                        help='one name per config (default: the config file names)')
    add_sweep_arguments(parser, 'plot', default_batch='each config\'s test_dataloader')
    _cli.add_cfg_options_arg(parser, help='KEY=VALUE overrides applied to every config '
                             '(as tools/test.py --cfg-options)')
    args = parser.parse_args(argv)
    bad = [s for s in args.sizes if s < 1]
    if bad:
        parser.error(f'--sizes {bad[0]}: sizes are positive pixel counts, e.g. 224 448 672')
    check_sweep_arguments(parser, args)
    if args.labels is not None and len(args.labels) != len(args.configs):
        parser.error(f'--labels has {len(args.labels)} names for {len(args.configs)} configs; '
                     'give one name per config, in the same order')
    if args.labels is None:
        args.labels = [osp.splitext(osp.basename(c))[0] for c in args.configs]
    if len(set(args.labels)) != len(args.labels):
        parser.error(f'--labels {args.labels}: each config needs its own name')
    return args


def sweep_config(path, label, args):
    """Evaluate one config at every size; returns its report entry."""
    from correspondence.datasets import CorrespondenceDataError
    from correspondence.evaluation import offline_eval, variants
    cfg = _cli.load_config(path, args.cfg_options)
    where = f'the test pipeline of {path!r}'
    with _cli.config_scope(cfg, 'mmengine'):
        try:
            pipeline = cfg.test_dataloader.dataset.pipeline
            base = pipeline[variants.resize_step(pipeline, where)]
            offline_eval.pck_metric_cfg(cfg)
        except (variants.VariantError, ValueError) as err:
            raise _cli.UsageError(str(err)) from None
        model = offline_eval.build_model(cfg, device=args.device)
        multiple, why = variants.patch_multiple(model.extractor)
        batch_size = args.batch_size or int(cfg.test_dataloader.get('batch_size', 1))
        entry = dict(config=path, label=label, frame=base.get('frame'),
                     configured_size=base.get('size'), multiple=multiple, multiple_reason=why,
                     sizes=[])
        done = {}
        for requested in args.sizes:
            used = variants.round_to_multiple(requested, multiple)
            if used not in done:
                try:
                    dataset = offline_eval.build_dataset(
                        cfg, variants.pipeline_with_size(pipeline, used, where))
                    indices = offline_eval.subset_indices(len(dataset), args.num_pairs)
                except CorrespondenceDataError as err:
                    raise _cli.RunError(str(err)) from None
                print(f'{PROG}: {label} at {used} px ({len(indices)} pairs)', flush=True)
                metrics, records = offline_eval.evaluate(
                    model, dataset, offline_eval.build_metric(cfg, args.preset),
                    batch_size=batch_size, indices=indices, quiet=True)
                done[used] = dict(metrics=metrics, num_pairs=len(indices),
                                  pair_ids=[r['pair_id'] for r in records])
            entry['sizes'].append(dict(requested=requested, used=used, **done[used]))
    return entry


def protocol_names(cfg, presets=None):
    from correspondence.evaluation import offline_eval
    specs = presets or offline_eval.pck_metric_cfg(cfg).get('presets', ['dift'])
    specs = [specs] if isinstance(specs, (str, dict)) else specs
    return [s if isinstance(s, str) else s.get('name') for s in specs]


def common_protocols(args):
    """The PCK protocols every config reports; a usage error when there is none."""
    names = {}
    for path in args.configs:
        cfg = _cli.load_config(path, args.cfg_options)
        try:
            names[path] = protocol_names(cfg, args.preset)
        except ValueError as err:
            raise _cli.UsageError(str(err)) from None
    common = [n for n in names[args.configs[0]] if all(n in v for v in names.values())]
    if not common:
        raise _cli.UsageError(
            f'the configs report no PCK protocol in common ({names}); pass --preset (e.g. '
            '--preset dift) to give all of them the same protocols.')
    return common


def main(argv=None):
    args = parse_args(argv)
    for path in args.configs:
        if not osp.isfile(path):
            raise _cli.UsageError(f'config {path!r} does not exist (relative paths are resolved '
                                  'from the current folder).')
    common = common_protocols(args)
    if args.metric is not None and args.metric.split('/')[0] not in common:
        raise _cli.UsageError(
            f'--metric {args.metric!r}: its protocol {args.metric.split("/")[0]!r} is not '
            f'reported by every config (protocols all of them report: {common}); pass --preset '
            'to give all of them the same protocols.')
    entries = [sweep_config(path, label, args) for path, label in zip(args.configs, args.labels)]
    first = entries[0]['sizes'][0]['metrics']
    metric = args.metric or next(k for k in first if k.split('/')[0] in common)
    for entry in entries:
        for size in entry['sizes']:
            if metric not in size['metrics']:
                raise _cli.UsageError(
                    f'metric {metric!r} is not reported for {entry["config"]!r} (it reports '
                    f'{list(size["metrics"])[:12]}); pass --metric with a key every config '
                    'reports, or --preset to give all of them the same protocols.')
        entry['values'] = [size['metrics'][metric] for size in entry['sizes']]
    report = dict(metric=metric, sizes=args.sizes, num_pairs=args.num_pairs, configs=entries)
    write_outputs(args.out, report)
    print(f'\n{metric} (%) by size (used size in brackets when rounded)')
    for entry in entries:
        cells = [f'{s["requested"]}' + (f' [{s["used"]}]' if s['used'] != s['requested'] else '')
                 + f': {v:.2f}' for s, v in zip(entry['sizes'], entry['values'])]
        print(f'  {entry["label"]} (multiple {entry["multiple"]}): ' + ', '.join(cells))
    return report


def write_outputs(out, report):
    import os

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from common.io import atomic_path
    os.makedirs(out, exist_ok=True)
    with atomic_path(osp.join(out, 'resolution.json')) as tmp, open(tmp, 'w') as f:
        json.dump(report, f, indent=1)
    fig, ax = plt.subplots(figsize=(6, 4))
    for entry in report['configs']:
        xs = [s['used'] for s in entry['sizes']]
        ax.plot(xs, entry['values'], marker='o', label=entry['label'])
    ax.set_xlabel('input frame size (pixels, after rounding to the patch multiple)')
    ax.set_ylabel(f'{report["metric"]} (%)')
    ax.set_title('PCK against input resolution', fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(osp.join(out, 'resolution.png')) as tmp:
        fig.savefig(tmp, format='png', dpi=110)
    plt.close(fig)
    print(f'{PROG}: wrote {osp.join(out, "resolution.json")} and '
          f'{osp.join(out, "resolution.png")}')


def cli(argv=None):
    return _cli.run_cli(PROG, main, argv)


if __name__ == '__main__':
    sys.exit(cli())
