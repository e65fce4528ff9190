r"""Train a sparse autoencoder on collected diffusion-feature tokens, then evaluate it.

    python tools/train_sae.py CONFIG --features DIR --work-dir DIR [--steps N]
        [--images-per-batch N] [--device cuda] [--cfg-options KEY=VALUE ...]

CONFIG holds ``sae`` (a registered SAE: ``dict(type='TopKSAE', d_in=..., d_sae=..., k=...)`` or
``ReluSAE``) and ``sae_train = dict(steps=..., lr=..., images_per_batch=..., seed=0,
log_interval=..., checkpoint_interval=..., resample_steps=None, eval_fraction=0.05)``. DIR is a
token shard folder written by ``tools/collect_sae_features.py`` (one ``[C, h, w]`` block output
per image; every spatial position is a token). The last ``eval_fraction`` of the images (sorted
keys) is held out: the SAE never trains on them and the metrics are computed on them.

Writes ``<work-dir>/sae_step{N}.safetensors`` (and ``last_checkpoint``; a re-run resumes),
``<work-dir>/sae_metrics.json`` (MSE, normalised MSE, fraction of variance explained, L0, L1,
dead and dense latents on the held-out tokens, training tokens/s) and
``<work-dir>/feature_density.png`` (log10 firing frequency of the latents).
"""
import json
import os
import sys

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # imported, not run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402

_cli.make_repo_importable()

PROG = 'tools/train_sae.py'
TRAIN_KEYS = ('steps', 'lr', 'images_per_batch', 'seed', 'log_interval', 'checkpoint_interval',
              'resample_steps', 'eval_fraction', 'weight_decay', 'grad_clip')


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0],
                                 epilog='See the top of this file for the details.')
    parser.add_argument('config', help='config with sae and sae_train')
    parser.add_argument('--features', required=True, metavar='DIR',
                        help='token shards of tools/collect_sae_features.py')
    parser.add_argument('--work-dir', required=True, metavar='DIR',
                        help='checkpoints, sae_metrics.json and feature_density.png')
    parser.add_argument('--steps', type=int, metavar='N', help='override sae_train.steps')
    parser.add_argument('--images-per-batch', type=int, metavar='N',
                        help='override sae_train.images_per_batch')
    parser.add_argument('--device', help='cpu or cuda (default: cuda when available)')
    _cli.add_cfg_options_arg(parser)
    args = parser.parse_args(argv)
    _cli.check_at_least_one(parser, args, ('steps', 'images_per_batch'))
    return args


def train_options(cfg, args):
    """``sae_train`` with the command line's overrides; unknown keys are a usage error."""
    options = dict(steps=1000, lr=1e-3, images_per_batch=8, seed=0, log_interval=100,
                   checkpoint_interval=None, resample_steps=None, eval_fraction=0.05,
                   weight_decay=0.0, grad_clip=1.0)
    given = dict(cfg.get('sae_train') or {})
    unknown = sorted(set(given) - set(TRAIN_KEYS))
    if unknown:
        raise _cli.UsageError(f'sae_train has unknown keys {unknown}; known: {list(TRAIN_KEYS)}.')
    options.update(given)
    if args.steps is not None:
        options['steps'] = args.steps
    if args.images_per_batch is not None:
        options['images_per_batch'] = args.images_per_batch
    if not 0 <= options['eval_fraction'] < 1:
        raise _cli.UsageError(f"sae_train.eval_fraction={options['eval_fraction']}: use a "
                              'fraction in [0, 1) of the images to hold out.')
    return options


def main(argv=None):
    args = parse_args(argv)
    cfg = _cli.load_config(args.config, args.cfg_options)
    if cfg.get('sae') is None:
        raise _cli.UsageError("The config has no `sae`: expected e.g. dict(type='TopKSAE', "
                              'd_in=512, d_sae=4096, k=32).')
    options = train_options(cfg, args)

    import torch
    from mmengine.registry import MODELS

    from common.io import atomic_path
    from segmentation.sae import evaluate_sae, plot_feature_density, train_sae
    from segmentation.sae.collect import SAEFeatureError, SAEFeatureShards

    try:
        shards = SAEFeatureShards(args.features)
    except SAEFeatureError as err:
        raise _cli.RunError(str(err)) from err
    keys = shards.keys()
    held = int(round(len(keys) * options['eval_fraction']))
    train_keys, eval_keys = keys[:len(keys) - held], keys[len(keys) - held:]
    if not train_keys:
        raise _cli.RunError(f'{args.features} holds {len(keys)} image(s); nothing is left to '
                            'train on after holding out sae_train.eval_fraction of them.')
    per = options['images_per_batch']

    def batches(key_list, seed):
        def epoch():
            order = torch.randperm(len(key_list), generator=torch.Generator().manual_seed(seed))
            picked = [key_list[i] for i in order.tolist()]
            for start in range(0, len(picked), per):
                yield torch.cat([shards.tokens(k).float() for k in picked[start:start + per]])
        return _Reiterable(epoch)

    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    torch.manual_seed(options['seed'])  # the SAE's initial weights
    with _cli.config_scope(cfg):
        sae = MODELS.build(cfg.sae)
    os.makedirs(args.work_dir, exist_ok=True)
    print(f'{PROG}: {type(sae).__name__} on {len(train_keys)} images '
          f'({shards.tokens(train_keys[0]).shape[0]} tokens each), {len(eval_keys)} held out; '
          f"{options['steps']} steps", flush=True)
    result = train_sae(sae, batches(train_keys, options['seed']), options['steps'],
                       lr=options['lr'], weight_decay=options['weight_decay'],
                       grad_clip=options['grad_clip'],
                       resample_steps=options['resample_steps'],
                       log_interval=options['log_interval'], work_dir=args.work_dir,
                       checkpoint_interval=options['checkpoint_interval'] or options['steps'],
                       seed=options['seed'], device=device)
    sae.eval()
    evaluation = evaluate_sae(sae, batches(eval_keys or train_keys, 0))
    stats = {k: v for k, v in evaluation.items() if not torch.is_tensor(v)}
    for name in ('dead', 'dense'):  # latent indices
        stats[f'{name}_latents'] = evaluation[name].tolist()
        stats[f'num_{name}'] = len(stats[f'{name}_latents'])
    frequency = evaluation.get('frequency')
    if frequency is not None:
        plot_feature_density(frequency, os.path.join(args.work_dir, 'feature_density.png'),
                             title=f'{type(sae).__name__}: latent firing frequency')
    summary = dict(sae=cfg.sae.to_dict(), train=options, features=os.path.abspath(args.features),
                   train_images=len(train_keys), eval_images=len(eval_keys or train_keys),
                   steps=result['step'], tokens=result['tokens'],
                   tokens_per_s=result['tokens_per_s'], checkpoint=result['checkpoint'],
                   eval=stats, history=result['history'])
    with atomic_path(os.path.join(args.work_dir, 'sae_metrics.json')) as tmp, \
            open(tmp, 'w') as f:
        json.dump(summary, f, indent=2, default=float)
    print(f"{PROG}: held-out FVE {stats.get('fve', float('nan')):.4f}, L0 "
          f"{stats.get('l0', float('nan')):.2f}, dead latents {stats['num_dead']}; wrote "
          f"{os.path.join(args.work_dir, 'sae_metrics.json')} and {result['checkpoint']}")
    return 0


class _Reiterable:
    """An iterable that starts a fresh epoch each time it is iterated (train_sae cycles it)."""

    def __init__(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        return self.epoch()


if __name__ == '__main__':
    sys.exit(_cli.run_cli(PROG, main))
