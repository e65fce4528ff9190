"""Correspondence evaluation speed: our batched CorrespondenceModel vs the reference protocol.

The one rule: both sides evaluate the very same pairs (the same model-input tensors, keypoints
and boxes) with the very same extractor weights, in one run, and the script prints their PCK@0.1
next to their speed, so a speed-up is never bought with accuracy unseen.

  ours       ``CorrespondenceModel.test_step`` on batches of ``--batch`` pairs: the source and
             target images of the whole batch in one extractor call, matching at feature
             resolution (the recipe's matcher: hard argmax or window soft-argmax, cell centres
             mapped to sub-pixel positions), batched over pairs and keypoints, no Python loop
             per keypoint; predictions mapped back to original pixels through the frames.
  reference  ``_correspondence_reference.py`` (DIFT / DistillDIFT dev evaluation, re-implemented
             from the notes): one image per extractor call, each feature map bilinearly
             upsampled to its original image size ([C, H, W]), then a Python loop over
             keypoints: cosine of the source keypoint's descriptor with every target pixel,
             hard argmax. ``--reference-extractor dift`` uses DIFT's own featurizer
             (``_dift_reference.py``) for the SD recipe instead of our extractor.

Pairs: held-out scikit-learn digits, each against a seeded random affine warp of itself (exact
ground truth; ``correspondence/datasets/digits_affine.py``) on a ``--orig-size`` canvas, the
originals; each recipe stretches them to its input size (as ``ResizePair(frame='stretched')``).
PCK@0.1: ``distance <= 0.1 * max(w, h)`` of the target's stroke box, original pixels, pooled
over keypoints (the ``dift`` preset's per-point number). Pairs are prepared before timing; the
times cover extraction, matching and the mapping back, for all pairs; median of ``--repeats``
after one warm-up pass. img/s counts both images of a pair (``2 x pairs/s``).

CPU (default): random-weight tiny models, checking and timing the protocols, not any backbone:
  dinov2-tiny   the DistillDIFT evaluation recipe (``configs/_base_/models/
                distilldift_dinov2-reg-b14.py``: last layer, cells bilinearly upsampled to
                60 x 60, window soft-argmax 5) on a 2-block, 64-wide DINOv2 at 224 px (16 x 16
                cells);
  dift-sd-tiny  DIFT's recipe (``configs/_base_/models/dift_sd21.py``: up_blocks.1, t=261,
                ensemble 8, 'a photo of a {category}', hard argmax on the feature grid) on the
                SD 2.x layout shrunk as ``_dift_reference.SD_TINY``, at 128 px (8 x 8 cells).
Originals are 500 px by default (about SPair-71k's long side): the reference's upsampled maps are
``C x 500 x 500`` per image, as in its real use.
GPU (``--device cuda`` with ``--dift-sd21`` and/or ``--dinov2-b``, real weights): DIFT's SD 2.1
@768 (the same DIFT recipe) and DINOv2-B @434 (the DistillDIFT evaluation recipe,
``configs/_base_/models/distilldift_dinov2-reg-b14.py``: 31 x 31 cells upsampled to 60 x 60,
window soft-argmax 5), in img/s next to the published A100 figures (DistillDIFT's project page:
DIFT 1.5 img/s, DINOv2 @434 28.6 img/s, whose exact timing scope is not stated).

    python benchmarks/correspondence_eval.py [--pairs 16] [--batch 8] [--repeats 3]
        [--orig-size 500] [--recipes dinov2-tiny dift-sd-tiny] [--out FILE.json]
    python benchmarks/correspondence_eval.py --device cuda --dift-sd21 stabilityai/stable-diffusion-2-1 \
        --dinov2-b facebook/dinov2-base [--pairs 16] [--orig-size 500] [--reference-extractor dift]
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(_HERE)
for _path in (os.path.join(ROOT, 'tools'), ROOT, _HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)
import _cli  # noqa: E402

PROG = 'benchmarks/correspondence_eval.py'
MODEL_CONFIGS = 'correspondence/configs/_base_/models'
ALPHA = 0.1
STROKE = 128  # pixel value above which a pixel is stroke (digits_affine's default)
CPU_RECIPES = ('dinov2-tiny', 'dift-sd-tiny')
GPU_RECIPES = ('dift-sd21', 'dinov2-b-434')
REFERENCE_EXTRACTORS = ('same', 'dift')
# DistillDIFT project page, one NVIDIA A100 80GB (shared/reference/correspondence.md, 4.1).
PUBLISHED_IMG_S = {'dift-sd21': 1.5, 'dinov2-b-434': 28.6}
TINY_DINOV2 = dict(model_type='dinov2', hidden_size=64, num_hidden_layers=2,
                   num_attention_heads=4, mlp_ratio=2, patch_size=14, image_size=224)


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cpu', help="'cpu' (default) or 'cuda'")
    parser.add_argument('--recipes', nargs='+', metavar='NAME',
                        help=f'which recipes to run (default: {" ".join(CPU_RECIPES)}, or those '
                        f'whose weights --dift-sd21 / --dinov2-b give); choices '
                        f'{", ".join(CPU_RECIPES + GPU_RECIPES)}')
    parser.add_argument('--dift-sd21', metavar='PATH_OR_HUB_ID',
                        help='Stable Diffusion 2.1 (diffusers folder or hub id) for the DIFT '
                        'recipe at 768 px')
    parser.add_argument('--dinov2-b', metavar='PATH_OR_HUB_ID',
                        help='DINOv2-B/14 (transformers folder or hub id, with or without '
                        'registers) for the DINOv2 @434 recipe')
    parser.add_argument('--pairs', type=int, default=16, help='pairs evaluated (1..600)')
    parser.add_argument('--batch', type=int, default=8, help='pairs per call of ours')
    parser.add_argument('--kps', type=int, default=12, help='keypoints per pair (at most)')
    parser.add_argument('--orig-size', type=int, default=None,
                        help='side of the original (square) images (default 500, about '
                        'SPair-71k\'s long side: the reference matches at this resolution)')
    parser.add_argument('--repeats', type=int, default=3, help='timed passes (median)')
    parser.add_argument('--reference-extractor', default='same', choices=REFERENCE_EXTRACTORS,
                        help="'same': the reference calls our extractor one image at a time "
                        "(default: only the evaluation protocol differs); 'dift': DIFT's own "
                        'featurizer for the SD recipes (prompt and 8 VAE copies per call)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the digits, affines, '
                        'keypoints and random weights')
    parser.add_argument('--out', metavar='FILE.json', help='also write the results as JSON')
    args = parser.parse_args(argv)
    for name in ('pairs', 'batch', 'kps', 'repeats'):
        if getattr(args, name) < 1:
            parser.error(f'--{name} {getattr(args, name)}: must be at least 1')
    if args.pairs > 600:
        parser.error(f'--pairs {args.pairs}: use 1..600 (the held-out digits)')
    if args.device.split(':')[0] not in ('cpu', 'cuda'):
        parser.error(f"--device {args.device}: use 'cpu' or 'cuda' (optionally 'cuda:N')")
    if args.orig_size is not None and args.orig_size < 32:
        parser.error(f'--orig-size {args.orig_size}: use at least 32 pixels')
    if args.out is not None and not args.out.endswith('.json'):
        parser.error(f'--out {args.out}: the results are JSON; name the file *.json')
    weights = dict(zip(GPU_RECIPES, (args.dift_sd21, args.dinov2_b)))
    if args.recipes is None:
        args.recipes = [r for r in GPU_RECIPES if weights[r]] or list(CPU_RECIPES)
    for name in args.recipes:
        if name not in CPU_RECIPES + GPU_RECIPES:
            parser.error(f'--recipes {name}: unknown; choose from '
                         f'{", ".join(CPU_RECIPES + GPU_RECIPES)}')
        if name in weights and not weights[name]:
            flag = '--dift-sd21' if name == 'dift-sd21' else '--dinov2-b'
            parser.error(f'--recipes {name} needs its weights: pass {flag} PATH_OR_HUB_ID')
    if args.orig_size is None:
        args.orig_size = 500
    return args


# ------------------------------------------------------------------------------------ recipes
def _model_config(name):
    from mmengine.config import Config
    cfg = Config.fromfile(os.path.join(ROOT, MODEL_CONFIGS, name))
    return cfg.model.to_dict()


def build_recipe(name, args, workdir):
    """``(CorrespondenceModel, input size S, published img/s or None, description)``."""
    import torch
    from mmengine.registry import MODELS
    from correspondence.models import CorrespondenceModel  # registers the subtree's modules
    published = PUBLISHED_IMG_S.get(name)
    torch.manual_seed(args.seed)
    if name in ('dinov2-tiny', 'dinov2-b-434'):
        model = _model_config('distilldift_dinov2-reg-b14.py')
        dino = model['extractor']['extractors'][0]
        if name == 'dinov2-tiny':
            dino.pop('pretrained')
            dino['config'] = TINY_DINOV2
            size, what = 224, ('DistillDIFT eval recipe (16 x 16 cells upsampled to 60 x 60, '
                               'window soft-argmax 5) on a tiny random DINOv2 (2 blocks, 64 '
                               'wide) @224')
        else:
            dino['pretrained'] = args.dinov2_b
            size, what = 434, ('DistillDIFT eval recipe (31 x 31 cells upsampled to 60 x 60, '
                               f'window soft-argmax 5) on DINOv2-B/14 {args.dinov2_b} @434')
    elif name in ('dift-sd-tiny', 'dift-sd21'):
        model = _model_config('dift_sd21.py')
        if name == 'dift-sd-tiny':
            from _dift_reference import SD_TINY, sd_components
            model['extractor']['teacher']['pretrained'] = sd_components(
                SD_TINY, os.path.join(workdir, 'tokenizer'))
            size, what = 128, ('DIFT recipe (up_blocks.1, t=261, ensemble 8, category prompt, '
                               'hard argmax) on a tiny random SD 2.x layout @128, 8 x 8 cells')
        else:
            model['extractor']['teacher']['pretrained'] = args.dift_sd21
            size, what = 768, (f'DIFT recipe on {args.dift_sd21} @768 (up_blocks.1, t=261, '
                               'ensemble 8, category prompt, hard argmax, float32)')
    else:  # parse_args lets no other name through
        raise ValueError(f'unknown recipe {name!r}')
    built = MODELS.build(model).to(args.device).eval()
    assert isinstance(built, CorrespondenceModel)
    return built, size, published, what


def reference_extractor(model, name, kind, device):
    """The reference's ``extract(image [1, 3, S, S] in [0, 1], category) -> [1, C, h, w]``."""
    extractor = model.extractor
    if kind == 'same' or name not in ('dift-sd-tiny', 'dift-sd21'):
        return lambda image, category: extractor(image.to(device), categories=[category])
    from _dift_reference import dift_features
    teacher = extractor.teacher
    index = int(extractor.layer.split('.')[1])
    template = extractor.prompt_template

    def extract(image, category):
        prompt = template.format(category=category) if template else teacher.prompt
        return dift_features(teacher._parts, image.to(device) * 2 - 1, prompt=prompt,
                             t=extractor.timestep, up_ft_index=index,
                             ensemble_size=teacher.ensemble).float()
    return extract


# ------------------------------------------------------------------------------------- pairs
def make_pairs(num_pairs, orig_size, num_kps, seed):
    """Digits-affine pairs at ``orig_size``: dicts of the data contract plus the original
    images (``src_image`` / ``trg_image``, ``[H, W, 3]`` uint8)."""
    import numpy as np
    from correspondence.datasets.base import progress
    from correspondence.datasets.digits_affine import (held_out_digits, make_affine_pair,
                                                       stroke_box)
    digits, labels, _ = held_out_digits(num_pairs, seed)
    rng = np.random.default_rng(seed + 1)
    pairs = []
    for n, (digit8, label) in enumerate(progress(zip(digits, labels), 'pairs', len(digits))):
        pair = make_affine_pair(digit8, rng, size=orig_size, digit_size=round(orig_size * 0.69),
                                num_kps=num_kps)
        images = {side: np.repeat(np.clip(np.rint(pair[side]), 0, 255).astype(np.uint8)[..., None],
                                  3, axis=-1) for side in ('src', 'trg')}
        pairs.append(dict(
            pair_id=str(n), category=str(int(label)),
            src_imsize=(orig_size, orig_size), trg_imsize=(orig_size, orig_size),
            src_kps=pair['src_kps'].astype(np.float32), trg_kps=pair['trg_kps'].astype(np.float32),
            src_bbox=stroke_box(pair['src'], STROKE), trg_bbox=stroke_box(pair['trg'], STROKE),
            src_image=images['src'], trg_image=images['trg']))
    return pairs


def model_inputs(pairs, size):
    """Every pair stretched to ``size``: ``[(sample dict with src_frame / trg_frame, src
    [3, S, S] uint8, trg [3, S, S] uint8)]``, what ``ResizePair`` + ``PackPair`` produce."""
    import torch
    from correspondence.datasets.transforms import frame_dict, resize_to_frame
    from correspondence.geometry import frame_transform
    out = []
    for pair in pairs:
        sample = {k: v for k, v in pair.items() if not k.endswith('_image')}
        tensors = []
        for side in ('src', 'trg'):
            transform = frame_transform(pair[f'{side}_imsize'], 'stretched', size)
            image = resize_to_frame(pair[f'{side}_image'], transform, 'stretched')
            sample[f'{side}_frame'] = frame_dict(transform)
            tensors.append(torch.from_numpy(image.copy()).permute(2, 0, 1).contiguous())
        out.append((sample, tensors[0], tensors[1]))
    return out


# ------------------------------------------------------------------------------ evaluations
def ours_evaluate(model, inputs, batch):
    """``pred_kps`` of every pair (original target pixels), ``batch`` pairs per test_step."""
    import torch
    preds = []
    for start in range(0, len(inputs), batch):
        chunk = inputs[start:start + batch]
        data = dict(inputs=dict(src=torch.stack([c[1] for c in chunk]),
                                trg=torch.stack([c[2] for c in chunk])),
                    data_samples=[dict(c[0]) for c in chunk])
        preds += [s['pred_kps'] for s in model.test_step(data)]
    return preds


def pck(pairs, preds, alpha=ALPHA):
    """Per-point PCK@alpha (target stroke box, original pixels, ``<=``), in percent."""
    from correspondence.evaluation.pck import aggregate, pair_distances, pck_threshold, within
    records = []
    for pair, pred in zip(pairs, preds):
        sample = dict(pair, pred_kps=pred)
        records.append(dict(category=pair['category'],
                            correct=within(pair_distances(sample), pck_threshold(sample,
                                                                                 alpha=alpha))))
    return 100.0 * aggregate(records, 'point')


def _median_seconds(fn, repeats, device, desc):
    """Median wall time of ``fn()`` over ``repeats`` passes after one warm-up, with a progress
    bar over the passes; returns ``(seconds, last result)``."""
    import statistics
    import time

    from _timing import sync
    from correspondence.datasets.base import progress
    times, result = [], None
    for i in progress(range(repeats + 1), desc):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times), result


def run_recipe(name, args, pairs, workdir):
    import numpy as np
    import torch

    from _correspondence_reference import reference_evaluate
    model, size, published, what = build_recipe(name, args, workdir)
    inputs = model_inputs(pairs, size)
    ref_pairs = [dict(sample, src=src, trg=trg) for sample, src, trg in inputs]
    extract = reference_extractor(model, name, args.reference_extractor, args.device)
    print(f'[{name}] {what}; {len(pairs)} pairs, {sum(len(p["src_kps"]) for p in pairs)} '
          f'keypoints, originals {args.orig_size} px', flush=True)
    with torch.inference_mode():
        t_ours, ours = _median_seconds(lambda: ours_evaluate(model, inputs, args.batch),
                                       args.repeats, args.device, f'{name}: ours')
        t_ref, ref = _median_seconds(lambda: reference_evaluate(extract, ref_pairs),
                                     args.repeats, args.device, f'{name}: reference')
    shapes_equal = all(np.shape(a) == np.shape(b) == np.shape(p['trg_kps'])
                       for a, b, p in zip(ours, ref, pairs))
    gap = np.concatenate([np.linalg.norm(np.asarray(a, np.float64) - b, axis=-1)
                          for a, b in zip(ours, ref)])
    n = len(pairs)
    row = dict(recipe=name, description=what, input_size=size, orig_size=args.orig_size,
               pairs=n, keypoints=int(sum(len(p['src_kps']) for p in pairs)), batch=args.batch,
               repeats=args.repeats, reference_extractor=args.reference_extractor,
               ours_s=t_ours, reference_s=t_ref,
               ours_pairs_per_s=n / t_ours, reference_pairs_per_s=n / t_ref,
               ours_img_per_s=2 * n / t_ours, reference_img_per_s=2 * n / t_ref,
               speedup=t_ref / t_ours, pck_ours=pck(pairs, ours), pck_reference=pck(pairs, ref),
               shapes_equal=shapes_equal, median_pred_gap_px=float(np.median(gap)),
               published_a100_img_per_s=published)
    return row


def print_table(rows, device):
    from _timing import device_name
    print(f'\ndevice: {device_name(device)}; PCK@{ALPHA} per point (target box, original pixels)')
    head = ('recipe', 'ours pairs/s', 'ref pairs/s', 'speed-up', 'ours img/s', 'ref img/s',
            'A100 published img/s', 'PCK ours', 'PCK ref', 'same shapes', 'median |ours-ref| px')
    print('| ' + ' | '.join(head) + ' |')
    print('|' + '---|' * len(head))
    for r in rows:
        pub = '-' if r['published_a100_img_per_s'] is None else f"{r['published_a100_img_per_s']}"
        cells = (r['recipe'], f"{r['ours_pairs_per_s']:.2f}", f"{r['reference_pairs_per_s']:.2f}",
                 f"{r['speedup']:.2f}x", f"{r['ours_img_per_s']:.2f}",
                 f"{r['reference_img_per_s']:.2f}", pub, f"{r['pck_ours']:.1f}",
                 f"{r['pck_reference']:.1f}", str(r['shapes_equal']),
                 f"{r['median_pred_gap_px']:.1f}")
        print('| ' + ' | '.join(cells) + ' |')
    for r in rows:
        print(f"speed-up {r['recipe']}: {r['speedup']:.2f}x (ours {r['ours_s']:.3f} s vs "
              f"reference {r['reference_s']:.3f} s for {r['pairs']} pairs, median of "
              f"{r['repeats']})")


def main(argv=None):
    args = parse_args(argv)
    import json
    import tempfile
    import time

    import torch
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        sys.exit(f'{PROG}: error: --device {args.device} but torch sees no CUDA device; run on a '
                 'machine with a GPU or leave --device at cpu (the tiny recipes)')
    started = time.time()
    pairs = make_pairs(args.pairs, args.orig_size, args.kps, args.seed)
    with tempfile.TemporaryDirectory() as workdir:
        rows = []
        for name in args.recipes:
            rows.append(run_recipe(name, args, pairs, workdir))
            if args.device.startswith('cuda'):
                torch.cuda.empty_cache()  # the next recipe's model starts from free memory
    print_table(rows, args.device)
    print(f'total {time.time() - started:.1f} s')
    if args.out:
        from common.io.atomic import atomic_path
        folder = os.path.dirname(os.path.abspath(args.out))
        os.makedirs(folder, exist_ok=True)
        with atomic_path(args.out) as tmp:
            with open(tmp, 'w') as f:
                json.dump(dict(device=args.device, seed=args.seed, rows=rows), f, indent=2)
        print(f'results written to {args.out}')
    return rows


if __name__ == '__main__':
    main()
