"""Zero-shot correspondence on digits with exact ground truth (``make demo-correspondence``).

Offline, on a CPU, in a few minutes; every evaluation is an ordinary config run by
``tools/test.py`` (the commands are printed):

1. the teacher: the digits DDPM of ``make demo`` (``work_dirs/demo/teacher/pipeline``), trained
   with ``tools/train.py`` as ``tools/demo_repfusion.py`` does when it is absent (``--teacher DIR``:
   any pixel DDPM pipeline folder instead);
2. the pairs, written once as a small SPair-71k-format release under the work dir
   (``correspondence/datasets/digits_affine.py``): held-out scikit-learn digits on a 64x64 canvas,
   each against a seeded random affine warp of itself (rotation +-20 deg, scale 0.85-1.15, shear
   +-10 deg, translation +-10 %), keypoints on the strokes mapped by the affine;
3. ``tools/test.py`` on each config of ``correspondence/configs/demo_digits/`` (the teacher's
   features, raw pixels, a random-init network; the same window soft-argmax matcher and PCK
   protocol), read through the real SPair-71k reader, pipeline, model and metric;
4. a table, ``results.json`` (PCK per extractor, pairs, seed, minutes) and ``matches.png``
   (predicted matches of a few pairs per extractor: green within PCK@0.1, red not).

A distilled student is not part of it: the correspondence subtree has no training yet (issue #8,
DistillDIFT), and the demo does not pretend otherwise.

    python tools/demo_correspondence.py [--work-dir work_dirs/demo_correspondence]
                                        [--num-pairs N] [--seed S] [--teacher DIR]
"""
import json
import os
import shutil
import sys
import time

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # imported, not run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROG = 'tools/demo_correspondence.py'
CONFIGS = 'correspondence/configs/demo_digits'
EXTRACTORS = {
    'ddpm_teacher': f'{CONFIGS}/ddpm-teacher-up0-t250_softargmax_digits-affine.py',
    'pixels': f'{CONFIGS}/pixels_softargmax_digits-affine.py',
    'random_init': f'{CONFIGS}/random-init-resnet18-w16_softargmax_digits-affine.py',
}
TEACHER_CONFIG = 'classification_distill/configs/demo_digits/ddpm_unet-tiny_1xb64-20e_digits.py'
DEFAULT_TEACHER_DIR = 'work_dirs/demo/teacher'
PROTOCOL = 'dift'
ALPHAS = (0.05, 0.1, 0.2)
PICTURE_ALPHA = 0.1
NOT_POSSIBLE = ('distilled student: not possible yet (the correspondence subtree has no training; '
                'issue #8, DistillDIFT)')


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/demo_correspondence')
    parser.add_argument('--num-pairs', type=int, default=200,
                        help='held-out digits, one affine pair each (1..600; default 200)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the digits drawn, the affines and the keypoints')
    parser.add_argument('--teacher', metavar='DIR',
                        help='a pixel DDPM pipeline folder (default: the digits teacher of '
                        f'`make demo`, {DEFAULT_TEACHER_DIR}/pipeline, trained when absent)')
    parser.add_argument('--show', type=int, default=4, metavar='N',
                        help='pairs per extractor drawn in matches.png (default 4)')
    args = parser.parse_args(argv)
    if not 0 < args.num_pairs <= 600:
        parser.error(f'--num-pairs {args.num_pairs}: use 1..600 (the held-out digits)')
    if args.teacher is not None and not os.path.isfile(
            os.path.join(args.teacher, 'model_index.json')):
        parser.error(f'--teacher {args.teacher}: not a diffusers pipeline folder (no '
                     'model_index.json); pass the folder save_pretrained wrote')
    return args


def teacher_pipeline(args, step, total):
    from demo_repfusion import run
    if args.teacher is not None:
        print(f'[{step}/{total}] teacher: {args.teacher}')
        return args.teacher
    pipeline = os.path.join(DEFAULT_TEACHER_DIR, 'pipeline')
    if os.path.isfile(os.path.join(ROOT, pipeline, 'model_index.json')):
        print(f'[{step}/{total}] teacher pipeline exists at {pipeline} (the digits teacher of '
              '`make demo`)')
    else:
        run(step, total, 'train the DDPM teacher on the digits (train split; about 2.5 min)',
            ['tools/train.py', TEACHER_CONFIG, '--work-dir', DEFAULT_TEACHER_DIR],
            os.path.join(ROOT, DEFAULT_TEACHER_DIR, 'train.log'))
    return pipeline


def write_pairs(data_root, num_pairs, seed, step, total):
    """The SPair-format release, written once per (num_pairs, seed)."""
    stamp = os.path.join(data_root, 'demo_pairs.json')
    wanted = dict(num_pairs=num_pairs, seed=seed)
    if os.path.isfile(stamp):
        with open(stamp) as f:
            if json.load(f) == wanted:
                print(f'[{step}/{total}] pairs exist at {data_root} ({num_pairs}, seed {seed})')
                return
    print(f'[{step}/{total}] write {num_pairs} affine pairs of held-out digits as an SPair-71k-'
          f'format release at {data_root} (seed {seed})', flush=True)
    from correspondence.datasets.digits_affine import write_spair_release
    if os.path.isdir(data_root):
        shutil.rmtree(data_root)
    write_spair_release(data_root, num_pairs, seed=seed)
    with open(stamp, 'w') as f:
        json.dump(wanted, f)


def main(argv=None):
    args = parse_args(argv)
    from demo_repfusion import run
    wd = args.work_dir
    total = 2 + len(EXTRACTORS) + 1
    started = time.time()
    step = 1
    pipeline = teacher_pipeline(args, step, total)
    step += 1
    data_root = os.path.join(wd, 'digits_affine')
    write_pairs(data_root, args.num_pairs, args.seed, step, total)

    results, dumps = {}, {}
    for name, cfg in EXTRACTORS.items():
        step += 1
        out = os.path.join(wd, name)
        dumps[name] = os.path.join(out, 'pairs.json')
        options = [f'test_dataloader.dataset.data_root={data_root}']
        if name == 'ddpm_teacher':
            options.append(f'model.extractor.teacher.pretrained={pipeline}')
        run(step, total, f'zero-shot correspondence: {name}',
            ['tools/test.py', cfg, '--work-dir', out, '--out', dumps[name], '--cfg-options',
             *options], os.path.join(out, 'test.log'))
        with open(dumps[name]) as f:
            metrics = json.load(f)['metrics']
        results[name] = {f'pck@{a}/{avg}': round(metrics[f'{PROTOCOL}/pck@{a}/per_{avg}'], 2)
                         for a in ALPHAS for avg in ('point', 'image')}

    step += 1
    picture = os.path.join(wd, 'matches.png')
    print(f'[{step}/{total}] draw {args.show} pairs per extractor: {picture}', flush=True)
    draw_matches(dumps, data_root, picture, args.show)
    summary = dict(
        pck=results, protocol=dict(name=PROTOCOL, threshold='target_bbox (the digit\'s stroke '
                                   'box)', frame='original (64x64)', compare='<=',
                                   alphas=list(ALPHAS)),
        configs=EXTRACTORS, teacher=pipeline, pairs=args.num_pairs, seed=args.seed,
        data_root=data_root, distilled_student=NOT_POSSIBLE,
        minutes=round((time.time() - started) / 60, 1))
    from common.io import atomic_path  # noqa: E402 - after the runs, to keep start-up light
    with atomic_path(os.path.join(wd, 'results.json')) as tmp, open(tmp, 'w') as f:
        json.dump(summary, f, indent=2)
    print_table(summary)
    print(f'\nwrote {os.path.join(wd, "results.json")} and {picture}; total '
          f'{summary["minutes"]} min')
    return 0


def print_table(summary):
    print(f'\nPCK (%) on {summary["pairs"]} affine pairs of held-out digits (seed '
          f'{summary["seed"]}; threshold alpha * max side of the target stroke box, <=):')
    cols = [f'pck@{a}/{avg}' for a in ALPHAS for avg in ('point', 'image')]
    print(f'  {"extractor":<16}' + ''.join(f'{c:>18}' for c in cols))
    for name, row in summary['pck'].items():
        print(f'  {name:<16}' + ''.join(f'{row[c]:>18.2f}' for c in cols))
    print(f'  ({NOT_POSSIBLE})')


def draw_matches(dumps, data_root, path, show, scale=3):
    """A grid, one column per extractor and one row per pair (the same ``show`` pairs, spread
    over the digits, for every extractor): source | target, a line from each keypoint to its
    prediction, green within PCK@0.1 (the metric's own threshold from the per-pair dump), red
    not."""
    from PIL import Image
    columns = []
    for name, dump in dumps.items():
        with open(dump) as f:
            pairs = json.load(f)['pairs']
        every = max(1, len(pairs) // max(1, show))
        columns.append([_draw_pair(name, pair, data_root, scale)
                        for pair in pairs[::every][:show]])
    if not columns or not columns[0]:
        return
    tile_w, tile_h = columns[0][0].size
    gap = 8
    sheet = Image.new('RGB', (len(columns) * (tile_w + gap), len(columns[0]) * (tile_h + gap)),
                      'white')
    for c, tiles in enumerate(columns):
        for r, tile in enumerate(tiles):
            sheet.paste(tile, (c * (tile_w + gap), r * (tile_h + gap)))
    sheet.save(path)


def _draw_pair(name, pair, data_root, scale):
    from PIL import Image, ImageDraw
    src = Image.open(_image_path(data_root, pair, 'src')).convert('RGB')
    trg = Image.open(_image_path(data_root, pair, 'trg')).convert('RGB')
    w, h = src.size
    canvas = Image.new('RGB', ((2 * w + 4) * scale, h * scale + 14), 'white')
    canvas.paste(src.resize((w * scale, h * scale), Image.NEAREST), (0, 14))
    canvas.paste(trg.resize((w * scale, h * scale), Image.NEAREST), ((w + 4) * scale, 14))
    draw = ImageDraw.Draw(canvas)
    protocol = pair['protocols'][PROTOCOL]
    limit = protocol['thresholds'][f'pck@{PICTURE_ALPHA}']
    correct = 0
    for s, p, d in zip(pair['src_kps'], pair['pred_kps'], protocol['distances']):
        ok = d <= limit
        correct += ok
        colour = (0, 200, 0) if ok else (230, 0, 0)
        a = ((s[0] + 0.5) * scale, (s[1] + 0.5) * scale + 14)
        b = ((p[0] + 0.5 + w + 4) * scale, (p[1] + 0.5) * scale + 14)
        draw.line([a, b], fill=colour, width=1)
        for x, y in (a, b):
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    draw.text((2, 1), f'{name}: digit {pair["category"]}, {correct}/{len(pair["src_kps"])} '
              f'within PCK@{PICTURE_ALPHA}', fill='black')
    return canvas


def _image_path(data_root, pair, side):
    """The image of one side of a pair, from its SPair-71k pair id ``n-<src>-<trg>:<cat>``."""
    names, category = pair['pair_id'].rsplit(':', 1)
    _, src, trg = names.split('-')
    return os.path.join(data_root, 'JPEGImages', category, (src if side == 'src' else trg) + '.png')


if __name__ == '__main__':
    sys.path.insert(0, ROOT)
    sys.exit(_cli.run_cli(PROG, main))
