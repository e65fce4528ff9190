r"""PCK of a diffusion model's features for every layer x timestep, in one pass over the pairs.

    python tools/analysis/correspondence_layer_timestep_sweep.py CONFIG \
        --layers up_blocks.0 up_blocks.1 up_blocks.2 --timesteps 50 100 261 500 --out DIR \
        [--num-pairs N] [--preset P [P ...]] [--metric KEY] [--batch-size B] \
        [--cache-dir DIR] [--device cpu|cuda] [--cfg-options KEY=VALUE ...]

CONFIG is a zero-shot config whose ``model.extractor`` is a ``DiffusionExtractor`` (e.g.
``correspondence/configs/zero_shot/dift_sd21-up1-t261-ens8_768px_spair71k.py``). Its teacher is
built ONCE with every layer and timestep of the grid: each image batch runs through the UNet
once (all timesteps batched, the forward stopped after the last layer) and every ``layer@t`` is
matched with the config's matcher and scored with its PCK metric (``--preset`` replaces the
metric's protocols), reading the pairs once. With ``--cache-dir`` (or the teacher's own
``cache_dir``) the features also go to the on-disk cache (deterministic teachers only).

Writes ``DIR/sweep.json`` (every metric of every cell, the grid of ``--metric``, the pairs
evaluated, the settings) and ``DIR/heatmap.png`` (layers x timesteps, values annotated).

Choices a reader must know:
* ``--num-pairs N`` takes N pairs spread evenly over the test split (``i * len // N``), so a
  category-sorted split keeps all its categories; their ids are in ``sweep.json``.
* The teacher's noise: a teacher with a ``seed`` draws the same noise for every image and
  timestep, so a cell equals the single-layer config evaluated on its own. With ``seed=None``
  all cells of one batch share one draw (still fair between cells; not reproducible).
* ``--metric`` defaults to the first metric the PCK metric reports (its first protocol, first
  alpha, first averaging).
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

PROG = 'tools/analysis/correspondence_layer_timestep_sweep.py'


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0],
                                 epilog='See the top of this file for the choices it makes.')
    parser.add_argument('config', help='zero-shot config with a DiffusionExtractor')
    parser.add_argument('--layers', nargs='+', required=True, metavar='L',
                        help='UNet module paths, e.g. up_blocks.0 up_blocks.1.resnets.1')
    parser.add_argument('--timesteps', nargs='+', type=int, required=True, metavar='T',
                        help='diffusion timesteps, e.g. 50 100 261')
    parser.add_argument('--out', required=True, metavar='DIR',
                        help='folder for sweep.json and heatmap.png')
    add_sweep_arguments(parser, 'heat map')
    parser.add_argument('--cache-dir', metavar='DIR',
                        help='on-disk feature cache of the teacher (deterministic teachers)')
    _cli.add_cfg_options_arg(parser)
    args = parser.parse_args(argv)
    check_sweep_arguments(parser, args)
    for name in ('layers', 'timesteps'):
        values = getattr(args, name)
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            parser.error(f'--{name} lists {", ".join(repeated)} more than once')
    negative = [t for t in args.timesteps if t < 0]
    if negative:
        parser.error(f'--timesteps {negative[0]}: timesteps are 0 or more')
    return args


def _usage(err):
    return _cli.UsageError(str(err))


def build_models(cfg, args):
    """``(teacher, {'layer@t': CorrespondenceModel})`` sharing one grid teacher."""
    import copy

    from mmengine.registry import MODELS

    from correspondence.evaluation import offline_eval, variants
    try:
        extractor = variants.extractor_cfg(cfg, ('DiffusionExtractor', ), PROG)
        offline_eval.seed_like_runner(cfg)
        teacher, extractors = variants.grid_extractors(extractor, args.layers, args.timesteps,
                                                       cache_dir=args.cache_dir)
    except variants.VariantError as err:
        raise _usage(err) from None
    device = args.device or ('cuda' if _cuda() else 'cpu')
    model_cfg = cfg.model.to_dict() if hasattr(cfg.model, 'to_dict') else copy.deepcopy(cfg.model)
    models = {}
    for key, ext in extractors.items():
        models[key] = MODELS.build(dict(model_cfg, extractor=ext)).to(device).eval()
    return teacher, models


def _cuda():
    import torch
    return torch.cuda.is_available()


def main(argv=None):
    args = parse_args(argv)
    cfg = _cli.load_config(args.config, args.cfg_options)
    from correspondence.datasets import CorrespondenceDataError
    from correspondence.evaluation import offline_eval
    with _cli.config_scope(cfg, 'mmengine'):
        try:
            metric_cfg = offline_eval.pck_metric_cfg(cfg)
            dataset = offline_eval.build_dataset(cfg)
            indices = offline_eval.subset_indices(len(dataset), args.num_pairs)
        except CorrespondenceDataError as err:
            raise _cli.RunError(str(err)) from None
        except ValueError as err:
            raise _usage(err) from None
        teacher, models = build_models(cfg, args)
        metrics = {key: offline_eval.build_metric(cfg, args.preset) for key in models}
        batch_size = args.batch_size or int(cfg.test_dataloader.get('batch_size', 1))
        print(f'{PROG}: {len(args.layers)} layers x {len(args.timesteps)} timesteps on '
              f'{len(indices)} pairs, one teacher run per batch of {batch_size}', flush=True)
        results = offline_eval.evaluate_many(models, dataset, metrics, batch_size=batch_size,
                                             indices=indices, desc='sweep', quiet=True)
    first = next(iter(results.values()))[0]
    metric_key = args.metric or next(iter(first))
    if metric_key not in first:
        raise _cli.UsageError(f'--metric {metric_key!r} is not reported by this PCK metric; '
                              f'it reports {list(first)[:20]}.')
    grid = [[results[f'{layer}@{t}'][0][metric_key] for t in args.timesteps]
            for layer in args.layers]
    records = next(iter(results.values()))[1]
    report = dict(
        config=args.config, layers=args.layers, timesteps=args.timesteps, metric=metric_key,
        grid=grid, num_pairs=len(indices), pair_ids=[r['pair_id'] for r in records],
        presets=[p if isinstance(p, str) else p.get('name') for p in
                 (args.preset or metric_cfg.get('presets', ['dift']))],
        teacher=dict(pretrained=str(teacher.pretrained), seed=teacher.seed,
                     ensemble=teacher.ensemble, noise=teacher.noise,
                     cache_dir=args.cache_dir or cfg.model.extractor.teacher.get('cache_dir')),
        teacher_runs=teacher.forward.calls, batch_size=batch_size,
        metrics={key: value[0] for key, value in results.items()})
    write_outputs(args.out, report)
    print_grid(report)
    return report


def write_outputs(out, report):
    import os

    from common.io import atomic_path
    os.makedirs(out, exist_ok=True)
    with atomic_path(osp.join(out, 'sweep.json')) as tmp, open(tmp, 'w') as f:
        json.dump(report, f, indent=1)
    draw_heatmap(report, osp.join(out, 'heatmap.png'))
    print(f'{PROG}: wrote {osp.join(out, "sweep.json")} and {osp.join(out, "heatmap.png")}')


def draw_heatmap(report, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np

    from common.io import atomic_path
    grid = np.asarray(report['grid'], dtype=float)
    layers, timesteps = report['layers'], report['timesteps']
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(timesteps), 1.0 + 0.55 * len(layers)))
    image = ax.imshow(grid, cmap='viridis', aspect='auto')
    ax.set_xticks(range(len(timesteps)), [str(t) for t in timesteps])
    ax.set_yticks(range(len(layers)), layers)
    ax.set_xlabel('timestep')
    ax.set_ylabel('layer')
    ax.set_title(f'{report["metric"]} ({report["num_pairs"]} pairs)', fontsize=9)
    middle = np.nanmean(grid) if grid.size else 0
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, f'{grid[i, j]:.1f}', ha='center', va='center', fontsize=8,
                    color='black' if grid[i, j] > middle else 'white')
    fig.colorbar(image, ax=ax, label='PCK (%)')
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=120)
    plt.close(fig)


def print_grid(report):
    width = max(len(layer) for layer in report['layers'])
    print(f'\n{report["metric"]} (%), rows: layers, columns: timesteps')
    print(' ' * width + ''.join(f'{t:>9}' for t in report['timesteps']))
    for layer, row in zip(report['layers'], report['grid']):
        print(f'{layer:<{width}}' + ''.join(f'{v:>9.2f}' for v in row))


def cli(argv=None):
    return _cli.run_cli(PROG, main, argv)


if __name__ == '__main__':
    sys.exit(cli())
