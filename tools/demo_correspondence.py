"""Correspondence on digits with exact ground truth (``make demo-correspondence``).

Offline, on a CPU, in a few minutes; every step is an ordinary config run by ``tools/train.py``
or ``tools/test.py`` (the commands are printed):

1. the teacher: the digits DDPM of ``make demo`` (``work_dirs/demo/teacher/pipeline``), trained
   with ``tools/train.py`` as ``tools/demo_repfusion.py`` does when it is absent (``--teacher DIR``:
   any pixel DDPM pipeline folder instead);
2. the pairs, written once as small SPair-71k-format releases under the work dir
   (``correspondence/datasets/digits_affine.py``): scikit-learn digits on a 64x64 canvas, each
   against a seeded random affine warp of itself (rotation +-20 deg, scale 0.85-1.15, shear
   +-10 deg, translation +-10 %), keypoints on the strokes mapped by the affine. Test pairs come
   from the 600 held-out digits (``PairAnnotation/test``); training pairs for the student from
   the teacher's training digits (``PairAnnotation/trn``), never the evaluation's;
3. ``tools/test.py`` on the zero-shot configs of ``correspondence/configs/demo_digits/`` (the
   teacher's features, raw pixels, a random-init network), read through the real SPair-71k reader,
   pipeline, model and metric, with one matcher and PCK protocol;
4. ``tools/train.py`` distils the teacher's similarity maps into the random-init network (the
   very same seeded weights; DistillDIFT's unsupervised recipe, no keypoints used), and
   ``tools/test.py`` evaluates the distilled student in the same protocol;
5. a table, ``results.json`` (PCK per extractor, pairs, seed, minutes) and ``matches.png``
   (predicted matches of a few pairs per extractor: green within PCK@0.1, red not).

    python tools/demo_correspondence.py [--work-dir work_dirs/demo_correspondence]
                                        [--num-pairs N] [--train-pairs N] [--seed S]
                                        [--teacher DIR]
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
STUDENT_CONFIG = (f'{CONFIGS}/distill-kl_resnet18-w16-layer1_from-ddpm-up0-t250_1xb16-4e_'
                  'digits-affine.py')
STUDENT_EPOCHS = 4  # the student config's max_epochs: its last checkpoint is epoch_4.pth
DEFAULT_TEACHER_DIR = 'work_dirs/demo/teacher'  # demo_repfusion.DIGITS_TEACHER_DIR
PROTOCOL = 'dift'
ALPHAS = (0.05, 0.1, 0.2)
PICTURE_ALPHA = 0.1


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/demo_correspondence')
    parser.add_argument('--num-pairs', type=int, default=200,
                        help='held-out digits, one affine pair each (1..600; default 200)')
    parser.add_argument('--train-pairs', type=int, default=1000,
                        help="training pairs of the teacher's training digits for the distilled "
                        'student (1..1197; default 1000)')
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
    if not 0 < args.train_pairs <= 1197:
        parser.error(f'--train-pairs {args.train_pairs}: use 1..1197 (the training digits)')
    if args.teacher is not None and not os.path.isfile(
            os.path.join(args.teacher, 'model_index.json')):
        parser.error(f'--teacher {args.teacher}: not a diffusers pipeline folder (no '
                     'model_index.json); pass the folder save_pretrained wrote')
    return args


def write_pairs(data_root, num_pairs, seed, step, total, split='test'):
    """The SPair-format release of one split, written once per (num_pairs, seed, split)."""
    stamp = os.path.join(data_root, 'demo_pairs.json')
    wanted = dict(num_pairs=num_pairs, seed=seed, split=split)
    if os.path.isfile(stamp):
        with open(stamp) as f:
            if json.load(f) == wanted:
                print(f'[{step}/{total}] {split} pairs exist at {data_root} ({num_pairs}, seed '
                      f'{seed})')
                return
    which = 'held-out digits' if split == 'test' else "the teacher's training digits"
    print(f'[{step}/{total}] write {num_pairs} affine pairs of {which} as an SPair-71k-format '
          f'release at {data_root} (seed {seed})', flush=True)
    from correspondence.datasets.digits_affine import write_spair_release
    if os.path.isdir(data_root):
        shutil.rmtree(data_root)
    write_spair_release(data_root, num_pairs, seed=seed, split=split)
    with open(stamp, 'w') as f:
        json.dump(wanted, f)


def evaluate(name, cfg, checkpoint, options, wd, step, total):
    """``tools/test.py`` on one config → (PCK row, per-pair dump path)."""
    from demo_repfusion import run
    out = os.path.join(wd, name)
    dump = os.path.join(out, 'pairs.json')
    args = ['tools/test.py', cfg] + ([checkpoint] if checkpoint else []) + [
        '--work-dir', out, '--out', dump, '--cfg-options', *options]
    run(step, total, f'correspondence on the test pairs: {name}', args,
        os.path.join(out, 'test.log'))
    with open(dump) as f:
        metrics = json.load(f)['metrics']
    row = {f'pck@{a}/{avg}': round(metrics[f'{PROTOCOL}/pck@{a}/per_{avg}'], 2)
           for a in ALPHAS for avg in ('point', 'image')}
    return row, dump


def main(argv=None):
    args = parse_args(argv)
    from demo_repfusion import run
    wd = args.work_dir
    total = 3 + len(EXTRACTORS) + 2 + 1
    started = time.time()
    step = 1
    from demo_repfusion import digits_teacher_pipeline
    pipeline = digits_teacher_pipeline(args.teacher, step, total)
    step += 1
    data_root = os.path.join(wd, 'digits_affine')
    write_pairs(data_root, args.num_pairs, args.seed, step, total)
    step += 1
    train_root = os.path.join(wd, 'digits_affine_trn')
    write_pairs(train_root, args.train_pairs, args.seed, step, total, split='train')

    results, dumps = {}, {}
    test_data = f'test_dataloader.dataset.data_root={data_root}'
    for name, cfg in EXTRACTORS.items():
        step += 1
        options = [test_data]
        if name == 'ddpm_teacher':
            options.append(f'model.extractor.teacher.pretrained={pipeline}')
        results[name], dumps[name] = evaluate(name, cfg, None, options, wd, step, total)

    step += 1
    student_dir = os.path.join(wd, 'distilled_student')
    run(step, total, "distil the teacher's similarity maps into the random-init network",
        ['tools/train.py', STUDENT_CONFIG, '--work-dir', student_dir, '--cfg-options',
         f'train_dataloader.dataset.data_root={train_root}',
         f'model.teacher.teacher.pretrained={pipeline}',
         f'model.teacher.teacher.cache_dir={os.path.join(wd, "teacher_cache")}'],
        os.path.join(student_dir, 'train.log'))
    step += 1
    checkpoint = os.path.join(student_dir, f'epoch_{STUDENT_EPOCHS}.pth')
    results['distilled_student'], dumps['distilled_student'] = evaluate(
        'distilled_student', STUDENT_CONFIG, checkpoint, [test_data], wd, step, total)

    step += 1
    picture = os.path.join(wd, 'matches.png')
    print(f'[{step}/{total}] draw {args.show} pairs per extractor: {picture}', flush=True)
    draw_matches(dumps, data_root, picture, args.show)
    configs = dict(EXTRACTORS, distilled_student=STUDENT_CONFIG)
    summary = dict(
        pck=results, protocol=dict(name=PROTOCOL, threshold='target_bbox (the digit\'s stroke '
                                   'box)', frame='original (64x64)', compare='<=',
                                   alphas=list(ALPHAS)),
        configs=configs, teacher=pipeline, pairs=args.num_pairs, train_pairs=args.train_pairs,
        seed=args.seed, data_root=data_root, train_data_root=train_root,
        student_checkpoint=checkpoint, minutes=round((time.time() - started) / 60, 1))
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
    print(f'  {"extractor":<18}' + ''.join(f'{c:>18}' for c in cols))
    for name, row in summary['pck'].items():
        print(f'  {name:<18}' + ''.join(f'{row[c]:>18.2f}' for c in cols))


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
