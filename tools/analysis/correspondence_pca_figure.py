r"""What a layer sees: the first 3 principal components of its features as RGB, beside the image.

    python tools/analysis/correspondence_pca_figure.py CONFIG --images A.jpg B.jpg \
        --layers up_blocks.0 up_blocks.1 --timesteps 100 261 --out FILE.png \
        [--segmentation A.png B.png] [--concat] [--category NAME] [--device cpu|cuda] \
        [--cfg-options KEY=VALUE ...]

CONFIG is a zero-shot config whose ``model.extractor`` is a ``DiffusionExtractor`` (``--layers``:
UNet module paths, ``--timesteps`` required; one teacher computes every ``layer@t`` in one call
per image) or a ``DINOv2Extractor`` (``--layers``: block indices as the extractor counts them,
0 the patch embedding, ``i`` block ``i``, -1 the last; no ``--timesteps``). Each image is
resized into the config's input frame (the ``ResizePair`` of its test pipeline; the original
size without one), exactly as the test pipeline does.

Per ``layer@t`` (or DINOv2 layer) one PCA is fitted jointly on the feature tokens of all the
given images (``correspondence.models.extractors.pca_project``: exact, centred, signs fixed), so
one colour means one direction of feature space in every image of that column; each component
is scaled to [0, 1] by its minimum and maximum over all images. ``--concat`` adds, per timestep,
the concatenated feature of all layers (each L2-normalised over channels and bilinearly resized
to the finest grid among them, then concatenated) with its own joint PCA. A segmentation mask
(``--segmentation``, one per image, any image file; non-zero = foreground) is shown beside its
image, in the same frame. Diffusion prompts: the teacher's configured prompt, or the extractor's
``prompt_template`` with ``--category``.
"""
import os.path as osp
import sys

_TOOLS = osp.dirname(osp.dirname(osp.abspath(__file__)))
if _TOOLS not in sys.path:  # run as a script: first; imported (tests): last, shadowing nothing
    sys.path.insert(0 if __name__ == '__main__' else len(sys.path), _TOOLS)
import _cli  # noqa: E402

_cli.make_repo_importable()

PROG = 'tools/analysis/correspondence_pca_figure.py'
EXTRACTORS = ('DiffusionExtractor', 'DINOv2Extractor')


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0],
                                 epilog='See the top of this file for the choices it makes.')
    parser.add_argument('config', help='zero-shot config with a DiffusionExtractor or a '
                        'DINOv2Extractor')
    parser.add_argument('--images', nargs='+', required=True, metavar='IMG')
    parser.add_argument('--layers', nargs='+', required=True, metavar='L',
                        help='UNet module paths (diffusion) or block indices (DINOv2)')
    parser.add_argument('--timesteps', nargs='+', type=int, metavar='T',
                        help='diffusion timesteps (diffusion configs only)')
    parser.add_argument('--out', required=True, metavar='FILE.png')
    parser.add_argument('--segmentation', nargs='+', metavar='MASK',
                        help='one mask image per image, shown beside it')
    parser.add_argument('--concat', action='store_true',
                        help='add the concatenated feature of all layers (per timestep)')
    parser.add_argument('--category', metavar='NAME',
                        help="fills the extractor's prompt_template (diffusion), e.g. cat")
    parser.add_argument('--device', help='cpu or cuda (default: cuda when available)')
    _cli.add_cfg_options_arg(parser)
    args = parser.parse_args(argv)
    if not args.out.lower().endswith('.png'):
        parser.error(f'--out {args.out}: write a .png file')
    if args.segmentation is not None and len(args.segmentation) != len(args.images):
        parser.error(f'--segmentation has {len(args.segmentation)} masks for '
                     f'{len(args.images)} images; give one mask per image, in the same order')
    for name in ('layers', 'timesteps'):
        values = getattr(args, name) or []
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            parser.error(f'--{name} lists {", ".join(repeated)} more than once')
    missing = [p for p in args.images + (args.segmentation or []) if not osp.isfile(p)]
    if missing:
        parser.error(f'{missing[0]}: no such image file')
    return args


# --------------------------------------------------------------------------------- inputs
def input_frame(cfg):
    """``(frame, size, resample)`` of the config's test ResizePair (``('original', None, ...)``
    without one)."""
    pipeline = cfg.test_dataloader.dataset.get('pipeline') or []
    for step in pipeline:
        if str(step.get('type', '')).split('.')[-1] == 'ResizePair':
            return step.get('frame', 'original'), step.get('size'), step.get('resample',
                                                                            'bilinear')
    return 'original', None, 'bilinear'


def load_inputs(paths, masks, frame, size, resample):
    """Images (uint8 ``[H, W, 3]``) and masks (bool ``[H, W]`` or None) in the input frame."""
    from correspondence.datasets import CorrespondenceDataError
    from correspondence.datasets.transforms import load_rgb, resize_to_frame
    from correspondence.geometry import frame_transform
    images, out_masks = [], []
    for i, path in enumerate(paths):
        try:
            image = load_rgb(path)
            mask = load_rgb(masks[i]) if masks else None
        except CorrespondenceDataError as err:
            raise _cli.UsageError(str(err)) from None
        h, w = image.shape[:2]
        transform = frame_transform((w, h), frame, size)
        images.append(resize_to_frame(image, transform, frame, resample))
        if mask is not None:
            if mask.shape[:2] != (h, w):
                raise _cli.UsageError(
                    f'--segmentation {masks[i]!r} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its '
                    f'image {path!r} is {w}x{h}; give the mask of that image, at its size.')
            mask = resize_to_frame(mask, transform, frame, 'nearest')
            out_masks.append(mask.max(axis=-1) > 0)
        else:
            out_masks.append(None)
    return images, out_masks


def _tensor(image, device):
    import torch
    return torch.from_numpy(image.transpose(2, 0, 1).copy()).float().div(255)[None].to(device)


# ------------------------------------------------------------------------------- features
def diffusion_features(cfg, ext_cfg, args, images, device):
    """``{'layer@t': [per-image [1, C, h, w]]}`` from one grid teacher."""
    from correspondence.evaluation import offline_eval, variants
    if not args.timesteps:
        raise _cli.UsageError(f'{args.config!r} has a DiffusionExtractor: give --timesteps '
                              '(e.g. --timesteps 100 261).')
    try:
        offline_eval.seed_like_runner(cfg)
        teacher = variants.grid_teacher(ext_cfg['teacher'], args.layers, args.timesteps)
    except variants.VariantError as err:
        raise _cli.UsageError(str(err)) from None
    teacher = teacher.to(device)
    template = ext_cfg.get('prompt_template')
    prompts = None
    if template is not None and args.category is not None:
        prompts = [template.format(category=args.category)]
    feats = {key: [] for key in teacher.feature_keys}
    for image in images:
        out = teacher(_tensor(image, device) * 2 - 1, prompts=prompts)
        for key in feats:
            feats[key].append(out[key].float().cpu())
    return feats, [[f'{layer}@{t}' for layer in args.layers] for t in args.timesteps]


def dinov2_features(cfg, ext_cfg, args, images, device):
    """``{'layer L': [per-image [1, C, h, w]]}`` of the configured DINOv2 at each layer."""
    from mmengine.registry import MODELS

    from correspondence.evaluation import variants
    if args.timesteps:
        raise _cli.UsageError(f'{args.config!r} has a DINOv2Extractor, which has no timesteps; '
                              'drop --timesteps.')
    try:
        layers = [int(v) for v in args.layers]
    except ValueError:
        raise _cli.UsageError(f'--layers {args.layers}: a DINOv2Extractor takes block indices '
                              '(0 the patch embedding, 1..N a block, -1 the last), e.g. '
                              '--layers 4 8 12.') from None
    extractor = MODELS.build(ext_cfg).to(device).eval()
    feats = {}
    for layer in layers:
        try:
            at = variants.dinov2_at_layer(extractor, layer, ext_cfg.get('final_norm'))
        except variants.VariantError as err:
            raise _cli.UsageError(str(err)) from None
        try:
            feats[f'layer {layer}'] = [at(_tensor(image, device)).float().cpu()
                                       for image in images]
        except ValueError as err:  # e.g. a frame that is no multiple of the patch size
            raise _cli.UsageError(str(err)) from None
    return feats, [[f'layer {layer}' for layer in layers]]


def concatenated(feats, keys):
    """Per image: the ``keys`` maps L2-normalised, resized to the finest grid, concatenated."""
    import torch
    import torch.nn.functional as F
    out = []
    for i in range(len(feats[keys[0]])):
        maps = [feats[k][i] for k in keys]
        grid = max((tuple(m.shape[-2:]) for m in maps), key=lambda s: s[0] * s[1])
        maps = [F.normalize(m, dim=1) for m in maps]
        maps = [m if tuple(m.shape[-2:]) == grid else
                F.interpolate(m, size=grid, mode='bilinear', align_corners=False) for m in maps]
        out.append(torch.cat(maps, dim=1))
    return out


def joint_pca(maps, dim=3):
    """First ``dim`` principal components of all images' tokens together (``pca_project``):
    per image, the raw projection ``[h, w, dim]`` and its RGB ``[h, w, dim]`` in [0, 1]
    (each component min-max scaled over all images)."""
    import torch

    from correspondence.models.extractors import pca_project
    channels = maps[0].shape[1]
    dim = min(dim, channels)
    tokens = torch.cat([m[0].reshape(channels, -1) for m in maps], dim=1)  # [C, N]
    projected = pca_project(tokens[None, :, None, :], dim)[0, :, 0].T  # [N, dim]
    low, high = projected.min(dim=0).values, projected.max(dim=0).values
    rgb = (projected - low) / torch.where(high > low, high - low, torch.ones_like(high))
    raw, colours, start = [], [], 0
    for m in maps:
        h, w = m.shape[-2:]
        raw.append(projected[start:start + h * w].reshape(h, w, dim).double().numpy())
        colours.append(rgb[start:start + h * w].reshape(h, w, dim).double().numpy())
        start += h * w
    return raw, colours


# -------------------------------------------------------------------------------- drawing
def draw(path, images, masks, columns, names):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np

    from common.io import atomic_path
    has_mask = any(m is not None for m in masks)
    n_cols = 1 + int(has_mask) + len(columns)
    fig, axes = plt.subplots(len(images), n_cols, figsize=(2.0 * n_cols, 2.0 * len(images)),
                             squeeze=False)
    for r, image in enumerate(images):
        h, w = image.shape[:2]
        panels = [('image', image)]
        if has_mask:
            mask = masks[r]
            panels.append(('segmentation', np.zeros((h, w)) if mask is None else
                           mask.astype(float)))
        for key in columns:
            colour = columns[key][r]
            if colour.shape[-1] < 3:  # fewer than 3 channels: pad with zeros
                colour = np.concatenate([colour, np.zeros(colour.shape[:2] + (
                    3 - colour.shape[-1], ))], axis=-1)
            panels.append((key, colour))
        for c, (title, data) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(data, cmap='gray' if data.ndim == 2 else None, interpolation='nearest',
                      extent=(-0.5, w - 0.5, h - 0.5, -0.5), vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
        axes[r, 0].set_ylabel(names[r], fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=100)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    cfg = _cli.load_config(args.config, args.cfg_options)
    import torch

    from correspondence.evaluation import variants
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    with _cli.config_scope(cfg, 'mmengine'):
        try:
            ext_cfg = variants.extractor_cfg(cfg, EXTRACTORS, PROG)
        except variants.VariantError as err:
            raise _cli.UsageError(str(err)) from None
        frame, size, resample = input_frame(cfg)
        images, masks = load_inputs(args.images, args.segmentation, frame, size, resample)
        kind = str(ext_cfg.get('type')).split('.')[-1]
        with torch.no_grad():
            if kind == 'DiffusionExtractor':
                feats, groups = diffusion_features(cfg, ext_cfg, args, images, device)
            else:
                feats, groups = dinov2_features(cfg, ext_cfg, args, images, device)
            if args.concat:
                for keys in groups:
                    suffix = keys[0].split('@')[1] if '@' in keys[0] else None
                    name = 'concat' + (f'@{suffix}' if suffix else '')
                    feats[name] = concatenated(feats, keys)
    columns, raw = {}, {}
    for key, maps in feats.items():
        raw[key], columns[key] = joint_pca(maps)
    draw(args.out, images, masks, columns, [osp.basename(p) for p in args.images])
    print(f'{PROG}: {len(columns)} feature columns x {len(images)} images (frame {frame}'
          f'{" " + str(size) if size else ""}); wrote {args.out}')
    return dict(columns=columns, projections=raw, features=feats, images=images, masks=masks)


def cli(argv=None):
    return _cli.run_cli(PROG, main, argv)


if __name__ == '__main__':
    sys.exit(cli())
