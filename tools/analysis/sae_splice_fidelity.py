r"""Splice-back fidelity of an SAE: the UNet's noise-prediction error with the block reconstructed.

    python tools/analysis/sae_splice_fidelity.py CONFIG SAE_CHECKPOINT --images DIR
        [--num-images N] [--size 256] [--timesteps T ...] [--features DIR] [--batch-size N]
        [--out FILE.json] [--device cpu] [--cfg-options KEY=VALUE ...]

CONFIG holds ``teacher`` (the ``DiffusionTeacher`` the SAE's tokens were collected with: one
layer, a ``seed`` for the shared fixed noise) and ``sae`` (the SAE's model config); SAE_CHECKPOINT
is a ``save_sae`` safetensors file. --images is a folder of square images (searched recursively;
the first --num-images in sorted order), read as ddpm-segmentation reads them. For each timestep
(--timesteps; default: the teacher's) ``segmentation/sae/splice.py``'s ``splice_fidelity`` gives
the noise-prediction MSE with the block's output unmodified / replaced by the SAE's reconstruction
/ by zeros / by the mean token, and the fraction recovered ``(zeros - sae) / (zeros - original)``.
The mean token is the mean over the images' own tokens, or, with --features (the SAE's token
shards from tools/collect_sae_features.py, same layer), the shards' mean token at the shards'
timestep (other timesteps keep the images' mean; each row says which it used).
With --batch-size the images go through in batches: MSEs are exact image-weighted means, the
feature FVE and a batch-mean token are per-batch values averaged (the default, one batch, has
neither caveat). Prints a table and writes JSON (default
``work_dirs/sae_splice_fidelity/splice.json``) atomically.

The one rule: the SAE must be the one trained on this block (its d_in equals the block's channels)
at these settings; the tool checks the width and refuses any other SAE.
"""
import os.path as osp
import sys

_TOOLS = osp.dirname(osp.dirname(osp.abspath(__file__)))
if _TOOLS not in sys.path:  # run as a script: first; imported (tests): last, shadowing nothing
    sys.path.insert(0 if __name__ == '__main__' else len(sys.path), _TOOLS)
import _cli  # noqa: E402

_cli.make_repo_importable()

PROG = 'tools/analysis/sae_splice_fidelity.py'
MODES = ('original', 'sae', 'zeros', 'mean')  # segmentation.sae.splice.MODES (no heavy import)
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp')


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0],
                                 epilog='See the top of this file for the details.')
    parser.add_argument('config', help='config with teacher and sae')
    parser.add_argument('checkpoint', help='the SAE (.safetensors written by save_sae)')
    parser.add_argument('--images', required=True, metavar='DIR',
                        help='folder of square images (searched recursively)')
    parser.add_argument('--num-images', type=int, metavar='N',
                        help='first N images in sorted order (default: all)')
    parser.add_argument('--size', type=int, default=256, help='model input size (default 256)')
    parser.add_argument('--timesteps', type=int, nargs='+', metavar='T',
                        help="timesteps to measure (default: the teacher's)")
    parser.add_argument('--features', metavar='DIR',
                        help="the SAE's token shards: their mean token for the 'mean' mode")
    parser.add_argument('--batch-size', type=int, metavar='N',
                        help='images per UNet call (default: all at once)')
    parser.add_argument('--device', help='cpu or cuda (default: cuda when available)')
    parser.add_argument('--out', default='work_dirs/sae_splice_fidelity/splice.json',
                        metavar='FILE.json',
                        help='JSON result (default work_dirs/sae_splice_fidelity/splice.json)')
    _cli.add_cfg_options_arg(parser)
    args = parser.parse_args(argv)
    _cli.check_at_least_one(parser, args, ('num_images', 'size', 'batch_size'))
    if args.timesteps and any(t < 0 for t in args.timesteps):
        parser.error(f'--timesteps must be >= 0, got {args.timesteps}')
    if not args.out.endswith('.json'):
        parser.error(f'--out must name a .json file, got {args.out!r}')
    return args


def main(argv=None):
    # data errors: one paragraph with the fix, exit 1
    return _cli.run_reporting(run, parse_args(argv), [
        'segmentation.sae.collect:SAEFeatureError',
        'segmentation.sae.splice:SpliceError',
        'segmentation.sae.train:SAECheckpointError',
        'segmentation.sae.models:SAEConfigError',
        'common.io.feature_shards:FeatureShardError',
    ], catch=(ValueError, RuntimeError))


def list_image_keys(root, num_images=None):
    """The images under ``root`` (recursively, sorted); the first ``num_images`` of them."""
    from common.io import feature_shards as fs
    from segmentation.sae.splice import SpliceError
    kind = fs.ShardKind(error=SpliceError, tool=PROG,
                        images_fix='pass --images DIR, a folder of square images',
                        extensions_fix='put images with one of those extensions into --images')
    keys = fs.list_images(root, IMAGE_EXTENSIONS, kind=kind)
    return keys if num_images is None else keys[:num_images]


def shards_mean_token(folder, layer):
    """``(mean token [C], timestep, number of tokens)`` of an SAE token-shard folder of ``layer``."""
    from segmentation.sae.collect import SAEFeatureError, SAEFeatureShards
    shards = SAEFeatureShards(folder)
    if shards.settings.get('layer') != layer:
        raise SAEFeatureError(
            f'--features {folder}: its tokens come from layer {shards.settings.get("layer")!r}, '
            f'but the teacher\'s block is {layer!r}; expected the SAE\'s own token shards. Pass '
            f'the folder tools/collect_sae_features.py wrote for this config, or leave --features '
            f'out (the images\' own mean token is used).')
    total, count = None, 0
    for key in shards.keys():
        tokens = shards.tokens(key).double()
        total = tokens.sum(0) if total is None else total + tokens.sum(0)
        count += tokens.shape[0]
    return (total / count).float(), shards.settings.get('timestep'), count


def combine(parts):
    """One result from per-batch ``splice_fidelity`` results ``[(n_images, res)]``: MSEs and
    feature MSE as image-weighted means (exact), FVE the weighted mean of the batches' FVEs,
    ``recovered`` recomputed from the combined MSEs."""
    if len(parts) == 1:
        return dict(parts[0][1])
    n = sum(k for k, _ in parts)
    first = parts[0][1]
    out = dict(first)
    out['mse'] = {m: sum(k * r['mse'][m] for k, r in parts) / n for m in first['mse']}
    for key in ('feature_mse', 'feature_fve'):
        values = [(k, r[key]) for k, r in parts]
        out[key] = None if any(v is None for _, v in values) else \
            sum(k * v for k, v in values) / n
    mse = out['mse']
    out['recovered'] = None
    if {'original', 'sae', 'zeros'} <= set(mse) and mse['zeros'] != mse['original']:
        out['recovered'] = (mse['zeros'] - mse['sae']) / (mse['zeros'] - mse['original'])
    return out


def fmt(value, spec='.6g'):
    return '-' if value is None else format(value, spec)


def table(rows):
    """The result rows as a plain-text table."""
    head = ['t', 'mse original', 'mse sae', 'mse zeros', 'mse mean', 'recovered', 'feature FVE']
    lines = [head]
    for r in rows:
        lines.append([str(r['timestep'])] + [fmt(r['mse'][m]) for m in MODES]
                     + [fmt(r['recovered'], '.4f'), fmt(r['feature_fve'], '.4f')])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return '\n'.join('  '.join(c.rjust(w) for c, w in zip(line, widths)) for line in lines)


def run(args):
    cfg = _cli.load_config(args.config, args.cfg_options)
    for name, example in (('teacher', "dict(type='DiffusionTeacher', pretrained=..., "
                           'layers=[BLOCK_PATH], timesteps=[T], seed=0)'),
                          ('sae', "dict(type='TopKSAE', d_in=512, d_sae=4096, k=32)")):
        if cfg.get(name) is None:
            raise _cli.UsageError(f'The config has no `{name}`: expected {example}.')
    _cli.check_local_file(args.checkpoint, 'SAE checkpoint')

    import importlib
    import json
    import os

    import torch
    from mmengine.registry import MODELS

    importlib.import_module('segmentation.sae')  # registers the SAEs
    from common.io.atomic import atomic_write_text
    from common.progress import progress
    from segmentation.sae.collect import check_teacher, load_square_image
    from segmentation.sae.splice import SpliceError, splice_fidelity
    from segmentation.sae.train import load_sae

    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    teacher_cfg = dict(cfg.teacher)
    if args.timesteps:
        teacher_cfg['timesteps'] = sorted(set(args.timesteps))
    with _cli.config_scope(cfg):
        teacher = MODELS.build(teacher_cfg).to(device).eval()
        sae = MODELS.build(cfg.sae)
    layer, _ = check_teacher(teacher, one_timestep=False)  # one layer, a seed
    if teacher.noise != 'forward':
        raise SpliceError(
            f"The teacher has noise={teacher.noise!r}, but splice-back fidelity measures the "
            f"UNet's noise prediction, which needs noised inputs; expected noise='forward' with a "
            f'seed (the setting the SAE\'s tokens were collected with). Fix the teacher config.')
    timesteps = list(teacher.timesteps)
    meta = load_sae(args.checkpoint, sae)
    sae = sae.to(device).eval()

    keys = list_image_keys(args.images, args.num_images)
    images = torch.stack([load_square_image(osp.join(args.images, k), args.size) for k in keys])
    with torch.no_grad():  # the block's width, from one image
        channels = teacher(images[:1].to(device))[f'{layer}@{timesteps[0]}'].shape[1]
    if sae.d_in != channels:
        raise SpliceError(
            f'The SAE in {args.checkpoint} reads tokens of width d_in={sae.d_in}, but the '
            f'teacher\'s block {layer!r} outputs {channels} channels; expected the SAE trained on '
            f'this block. Give the config the teacher the SAE\'s tokens were collected with (its '
            f'layers) and the SAE\'s own checkpoint.')
    mean_token, mean_t, mean_count = None, None, 0
    if args.features:
        mean_token, mean_t, mean_count = shards_mean_token(args.features, layer)
        if mean_token.shape[0] != channels:
            raise SpliceError(
                f'--features {args.features}: its tokens have {mean_token.shape[0]} channels, '
                f'the block {layer!r} has {channels}; expected the SAE\'s own token shards.')

    batch = args.batch_size or len(images)
    rows = []
    for t in progress(timesteps, desc='splice-back', total=len(timesteps)):
        use_shards = mean_token is not None and mean_t == t
        parts = []
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            labels = teacher._class_labels(None, len(chunk))
            res = splice_fidelity(teacher.unet, layer, sae, chunk, t, teacher.noise_scheduler,
                                  seed=teacher.seed, modes=MODES,
                                  mean_token=mean_token if use_shards else None,
                                  class_labels=labels)
            parts.append((len(chunk), res))
        row = combine(parts)
        row['mean_token'] = 'features' if use_shards else 'images'
        rows.append(row)
    record = dict(layer=layer, timesteps=timesteps, seed=teacher.seed, size=args.size,
                  num_images=len(images), batch_size=batch, images=osp.abspath(args.images),
                  config=osp.abspath(args.config), checkpoint=osp.abspath(args.checkpoint),
                  sae_class=meta.get('sae_class'), sae_step=meta.get('step'),
                  features=osp.abspath(args.features) if args.features else None,
                  features_timestep=mean_t, features_tokens=mean_count, results=rows)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    atomic_write_text(args.out, json.dumps(record, indent=1) + '\n')
    print(f'{PROG}: {layer}, {len(images)} images, seed {teacher.seed}\n{table(rows)}\n'
          f'wrote {args.out}', flush=True)


if __name__ == '__main__':
    sys.exit(_cli.run_cli(PROG, main))
