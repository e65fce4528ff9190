"""One-step generation on digits with DMD (``make demo-dmd``): offline, on a CPU.

Every training step is an ordinary config run by a tool (the commands are printed):

1. the teacher: the digits DDPM of ``make demo`` (``work_dirs/demo/teacher/pipeline``, a
   v-prediction UNet), trained when absent (``--teacher DIR``: any pixel DDPM pipeline folder);
2. a small digits classifier (``generation_dmd/demo/digits_classifier.py``) trained on the digits'
   train split; its penultimate features give the proxy distance, its confidence the
   "recognised" rate (top softmax probability >= 0.9);
3. the teacher's (noise, image) pairs: ``tools/build_dmd_pairs.py`` (18 Heun steps each);
4. DMD (distribution matching + L2 regression on the pairs): ``tools/train.py`` on
   ``generation_dmd/configs/demo_digits/``, then ``tools/export_generator.py``;
5. the same seeds through three samplers, timed side by side: the teacher's 18-step Heun ODE
   (35 network evaluations), the teacher evaluated once at the generator's sigma (the generator
   before training) and the DMD generator; each scored against the 600 held-out test digits with
   the proxy Fréchet distance in digits classifier features (not FID) and the recognised rate;
   sample grids (``<work-dir>/*.png``), ``results.json`` and a table.

Files that exist are reused (the classifier, the pairs, the distilled checkpoint, when made
with the same settings and teacher); ``--fresh`` redoes steps 2-4. ``--quick`` is a smoke run
(seconds; tiny numbers, meaningless results) for the tests.

    python tools/demo_dmd.py [--work-dir work_dirs/demo_dmd] [--teacher DIR] [--num-images N]
                             [--iters N] [--fresh] [--quick]
"""
import hashlib
import json
import os
import shutil
import sys
import time

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # imported, not run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROG = 'tools/demo_dmd.py'
CONFIG = 'generation_dmd/configs/demo_digits/dmd_ddpm-digits_1xb32-350it_digits.py'
TEACHER_DIR = 'work_dirs/demo/teacher'  # demo_repfusion.DIGITS_TEACHER_DIR
HEUN_STEPS = 18  # EDM's deterministic sampler: 2 * 18 - 1 = 35 network evaluations
PAIRS_BASE_SEED = 1  # pair seeds (1 << 48) | index never meet the evaluation seeds 0..N-1
SETTINGS = dict(  # the full demo, and the --quick smoke run
    full=dict(num_images=500, classifier_epochs=30, pairs=400, iters=350, batch_size=32,
              eval_batch=100),
    quick=dict(num_images=16, classifier_epochs=1, pairs=8, iters=2, batch_size=4,
               eval_batch=8))
ROWS = {
    'teacher_heun': f'teacher, Heun {HEUN_STEPS} steps',
    'teacher_one_step': 'teacher, 1 step (= generator before DMD)',
    'dmd_generator': 'DMD generator, 1 step',
    'real_train_digits': 'real digits (train split, classifier-seen)',
}


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/demo_dmd')
    parser.add_argument('--teacher', metavar='DIR',
                        help='a pixel DDPM pipeline folder (default: the digits teacher of '
                        f'`make demo`, {TEACHER_DIR}/pipeline, trained when absent)')
    parser.add_argument('--num-images', type=int, default=None, metavar='N',
                        help='images per row of the table (default 500; seeds 0..N-1)')
    parser.add_argument('--iters', type=int, default=None, metavar='N',
                        help='DMD training iterations (default: the config\'s 500)')
    parser.add_argument('--fresh', action='store_true',
                        help='retrain the classifier, rebuild the pairs and redistil even if '
                        'they exist (the teacher is kept)')
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run in seconds (tiny numbers; for the tests)')
    args = parser.parse_args(argv)
    for name in ('num_images', 'iters'):
        value = getattr(args, name)
        if value is not None and value < (2 if name == 'num_images' else 1):
            parser.error(f'--{name.replace("_", "-")} {value}: use at least '
                         f'{2 if name == "num_images" else 1}')
    if args.teacher is not None and not os.path.isfile(
            os.path.join(args.teacher, 'model_index.json')):
        parser.error(f'--teacher {args.teacher}: not a diffusers pipeline folder (no '
                     'model_index.json); pass the folder save_pretrained wrote')
    return args


# ------------------------------------------------------------------------------ bookkeeping
def teacher_fingerprint(pipeline):
    """sha256 of the teacher's UNet weights and scheduler config: what the pairs and the
    distilled generator depend on."""
    digest = hashlib.sha256()
    for sub in ('unet', 'scheduler'):
        folder = os.path.join(pipeline, sub)
        for name in sorted(os.listdir(folder)):
            with open(os.path.join(folder, name), 'rb') as f:
                for block in iter(lambda: f.read(1 << 20), b''):
                    digest.update(block)
    return digest.hexdigest()


def stamp_matches(folder, wanted, required):
    """True when ``folder/demo_stamp.json`` equals ``wanted`` and ``required`` (a path) exists."""
    stamp = os.path.join(folder, 'demo_stamp.json')
    if not (os.path.isfile(stamp) and os.path.exists(required)):
        return False
    with open(stamp) as f:
        return json.load(f) == wanted


def write_stamp(folder, wanted):
    from common.io import atomic_write_text
    atomic_write_text(os.path.join(folder, 'demo_stamp.json'), json.dumps(wanted, indent=2))


def run_here(step, total, title, tool, argv):
    """Run ``tools/<tool>.py argv`` in this process (its ``main``; saves the start-up of a
    fresh interpreter), printing the command as ``run`` does; stop the demo on a failure."""
    import importlib
    print(f'[{step}/{total}] {title}\n      $ tools/{tool}.py {" ".join(argv)}', flush=True)
    start = time.time()
    module = importlib.import_module(tool)
    code = module.main(argv) if tool == 'export_generator' else \
        _cli.run_cli(f'tools/{tool}.py', module.main, argv)
    if code:
        sys.exit(f'step {step} failed (tools/{tool}.py exit {code}); see the message above')
    print(f'      done in {time.time() - start:.0f} s', flush=True)


def last_line(log_path, marker):
    """The last line of ``log_path`` containing ``marker`` (stripped), or ''."""
    found = ''
    with open(log_path) as f:
        for line in f:
            if marker in line:
                found = line.strip()
    return found


def teacher_image_shape(pipeline):
    with open(os.path.join(pipeline, 'unet', 'config.json')) as f:
        config = json.load(f)
    size = config['sample_size']
    size = size if isinstance(size, int) else size[0]
    return [int(config.get('in_channels', 3)), int(size), int(size)]


# ------------------------------------------------------------------------------ steps
def classifier_step(wd, image_size, epochs, fresh, step, total):
    """Train (or reuse) the digits classifier; write the test split as uint8 for tools/test.py."""
    import numpy as np

    from generation_dmd.demo.digits_classifier import (digits_tensors, load_digits_classifier,
                                                       save_digits_classifier,
                                                       train_digits_classifier)
    from generation_dmd.generator import to_uint8
    folder = os.path.join(wd, 'classifier')
    wanted = dict(image_size=image_size, epochs=epochs, seed=0)
    if not fresh and stamp_matches(folder, wanted, os.path.join(folder, 'model.safetensors')):
        print(f'[{step}/{total}] digits classifier exists at {folder}')
        model, info = load_digits_classifier(folder)
    else:
        print(f'[{step}/{total}] train the digits classifier ({epochs} epochs on the train '
              f'split, {image_size}x{image_size})', flush=True)
        start = time.time()
        model, info = train_digits_classifier(epochs=epochs, image_size=image_size,
                                              log=lambda m: print('      ' + m, flush=True))
        save_digits_classifier(model, folder, info)
        write_stamp(folder, wanted)
        print(f'      test accuracy {info["test_accuracy"]:.2f}%, recognises '
              f'{info["test_recognised"]:.2f}% of the test digits; done in '
              f'{time.time() - start:.0f} s', flush=True)
    reference = os.path.join(wd, 'digits_test_uint8.npy')
    if not os.path.isfile(reference) or fresh:
        from common.io import atomic_path
        images, _ = digits_tensors('test', image_size)
        with atomic_path(reference) as tmp, open(tmp, 'wb') as f:
            np.save(f, to_uint8(images).numpy())
    return model, info


def pairs_step(wd, pipeline, fingerprint, image_shape, per_class, fresh, step, total):
    out = os.path.join(wd, 'pairs')
    wanted = dict(teacher=fingerprint, per_class=per_class, image_shape=image_shape,
                  base_seed=PAIRS_BASE_SEED, num_steps=HEUN_STEPS)
    if not fresh and stamp_matches(out, wanted, os.path.join(out, 'manifest.json')):
        print(f'[{step}/{total}] teacher pairs exist at {out}')
        return out
    if os.path.isdir(out):
        shutil.rmtree(out)
    run_here(step, total, f'sample {per_class} teacher pairs (noise -> {HEUN_STEPS}-step Heun '
             f'image)', 'build_dmd_pairs',
             [CONFIG, '--out', out, '--batch-size', '100', '--cfg-options',
              f'teacher.pretrained={pipeline}', f'pairs.per_class={per_class}',
              'pairs.image_shape=[{},{},{}]'.format(*image_shape),
              f'pairs.base_seed={PAIRS_BASE_SEED}'])
    write_stamp(out, wanted)
    return out


def distil_step(run, wd, pipeline, fingerprint, pairs, setting, fresh, step, total):
    """tools/train.py on the DMD config, then tools/export_generator.py; returns the generator
    folder and the checkpoint."""
    out = os.path.join(wd, 'dmd')
    iters, batch = setting['iters'], setting['batch_size']
    checkpoint = os.path.join(out, f'iter_{iters}.pth')
    generator = os.path.join(wd, 'generator')
    with open(os.path.join(ROOT, CONFIG), 'rb') as f:
        config_sha256 = hashlib.sha256(f.read()).hexdigest()
    wanted = dict(teacher=fingerprint, pairs=pairs, iters=iters, batch_size=batch,
                  config=CONFIG, config_sha256=config_sha256)
    options = [f'model.teacher.pretrained={pipeline}']
    if not fresh and stamp_matches(out, wanted, checkpoint) and \
            os.path.isfile(os.path.join(generator, 'generator.json')):
        print(f'[{step}/{total}] DMD generator exists at {generator} ({checkpoint})')
        return generator, checkpoint, step + 1
    if os.path.isdir(out):
        shutil.rmtree(out)
    log = os.path.join(out, 'train.log')
    run(step, total, f'distil the teacher with DMD ({iters} iterations, batch {batch})',
        ['tools/train.py', CONFIG, '--work-dir', out, '--cfg-options', *options,
         f'train_dataloader.dataset.root={pairs}', f'train_cfg.max_iters={iters}',
         f'train_dataloader.batch_size={batch}'], log)
    final = last_line(log, 'Iter(train)')
    print('      ' + final[final.find('Iter(train)'):][:200], flush=True)
    step += 1
    run_here(step, total, 'export the one-step generator (EMA weights)', 'export_generator',
             [CONFIG, checkpoint, generator, '--overwrite', '--cfg-options', *options])
    write_stamp(out, wanted)
    return generator, checkpoint, step


def rounded(row, key):
    """A judge's row with the distance to 4 decimals and the rate to 2 (for results.json)."""
    return dict(row, **{key: round(row[key], 4), 'recognised_pct': round(row['recognised_pct'], 2)})


def evaluate_step(wd, pipeline, generator_dir, judge, setting, step, total):
    """The rows of the table: same seeds, same scoring, timed side by side."""
    import torch

    from generation_dmd.adapters import DiffusersDenoiser
    from generation_dmd.demo.digits_classifier import digits_tensors
    from generation_dmd.demo.evaluate import PROXY_KEY, grid_png, timed_generate
    from generation_dmd.generator import OneStepGenerator, load_generator
    from generation_dmd.pairs import pair_latents
    from generation_dmd.sampling import edm_sampler
    n, batch = setting['num_images'], setting['eval_batch']
    print(f'[{step}/{total}] {n} images from each sampler (seeds 0-{n - 1}), timed side by side, '
          f'scored against the held-out test digits', flush=True)
    teacher = DiffusersDenoiser(pretrained=pipeline).eval()
    generator = load_generator(generator_dir).eval()
    before = OneStepGenerator(teacher, sigma=generator.sigma).eval()
    shape = generator.image_shape
    samplers = {
        'teacher_heun': (lambda z: edm_sampler(teacher, z, num_steps=HEUN_STEPS),
                         2 * HEUN_STEPS - 1),
        'teacher_one_step': (before, 1),
        'dmd_generator': (generator, 1),
    }
    seeds = list(range(n))
    rows = {}
    for name, (sample, nfe) in samplers.items():
        start = time.time()
        images, per_second = timed_generate(sample, seeds, batch,
                                             lambda s: pair_latents(s, shape))
        row = rounded(judge.score(images), PROXY_KEY)
        row.update(images_per_s=round(per_second, 1), nfe=nfe,
                   grid=grid_png(images[:100], os.path.join(wd, f'{name}.png')))
        rows[name] = row
        print(f'      {ROWS[name]}: {time.time() - start:.0f} s', flush=True)
    real, _ = digits_tensors('train', judge.image_size)
    real = real[torch.randperm(len(real), generator=torch.Generator().manual_seed(0))[:n]]
    rows['real_train_digits'] = dict(rounded(judge.score(real), PROXY_KEY), images_per_s=None,
                                     nfe=None,
                                     grid=grid_png(real[:100], os.path.join(wd, 'real.png')))
    return rows


# ------------------------------------------------------------------------------ main
def main(argv=None):
    args = parse_args(argv)
    _cli.make_repo_importable()
    from demo_repfusion import digits_teacher_pipeline, run
    setting = dict(SETTINGS['quick' if args.quick else 'full'])
    if args.num_images is not None:
        setting['num_images'] = args.num_images
    if args.iters is not None:
        setting['iters'] = args.iters
    wd = os.path.abspath(args.work_dir)  # the tools run with the repository as their cwd
    os.makedirs(wd, exist_ok=True)
    total = 7
    started = time.time()
    timings = {}
    step = 1
    pipeline = digits_teacher_pipeline(args.teacher and os.path.abspath(args.teacher), step,
                                       total)
    pipeline = os.path.join(ROOT, pipeline)  # unchanged when absolute (a --teacher)
    timings['teacher_s'] = round(time.time() - started, 1)

    from generation_dmd.demo.evaluate import (PROXY_KEY, PROXY_NAME, REFERENCE, DigitsJudge)
    fingerprint = teacher_fingerprint(pipeline)
    image_shape = teacher_image_shape(pipeline)
    step += 1
    mark = time.time()
    classifier, classifier_info = classifier_step(wd, image_shape[-1],
                                                  setting['classifier_epochs'], args.fresh,
                                                  step, total)
    judge = DigitsJudge(classifier)
    timings['classifier_s'] = round(time.time() - mark, 1)
    step += 1
    mark = time.time()
    pairs = pairs_step(wd, pipeline, fingerprint, image_shape, setting['pairs'],
                       args.fresh, step, total)
    timings['pairs_s'] = round(time.time() - mark, 1)
    step += 1
    mark = time.time()
    generator_dir, checkpoint, step = distil_step(run, wd, pipeline, fingerprint, pairs,
                                                  setting, args.fresh, step, total)
    timings['distil_s'] = round(time.time() - mark, 1)
    step = max(step, 5) + 1
    mark = time.time()
    rows = evaluate_step(wd, pipeline, generator_dir, judge, setting, step, total)
    timings['evaluate_s'] = round(time.time() - mark, 1)

    step += 1
    results = dict(
        proxy_metric=PROXY_NAME, proxy_key=PROXY_KEY, reference=REFERENCE,
        recognised_rule='an image is recognised when the digits classifier\'s top softmax '
                        'probability is >= 0.9 (any class)',
        num_images=setting['num_images'], seeds=f'0-{setting["num_images"] - 1}',
        rows={name: dict(label=ROWS[name], **row) for name, row in rows.items()},
        classifier=dict(folder=os.path.join(wd, 'classifier'), **classifier_info),
        teacher=dict(pipeline=pipeline, sha256=fingerprint,
                     recognised_pct=rows['teacher_heun']['recognised_pct']),
        dmd=dict(config=CONFIG, checkpoint=checkpoint, generator=generator_dir, pairs=pairs,
                 iterations=setting['iters'], batch_size=setting['batch_size']),
        quick=bool(args.quick), timings=timings,
        minutes=round((time.time() - started) / 60, 1))
    from common.io import atomic_path
    path = os.path.join(wd, 'results.json')
    with atomic_path(path) as tmp, open(tmp, 'w') as f:
        json.dump(results, f, indent=2, ensure_ascii=False)
    print(f'[{step}/{total}] wrote {path}')
    print_table(results)
    print(f'\nsample grids: {", ".join(r["grid"] for r in results["rows"].values())}; total '
          f'{results["minutes"]} min')
    return 0


def print_table(results):
    key = results['proxy_key']
    print(f'\nOne-step generation on digits: {results["num_images"]} images per row (seeds '
          f'{results["seeds"]}), scored against the {results["reference"]}')
    width = max(len(row['label']) for row in results['rows'].values()) + 2
    print(f'  {"source":<{width}}{"NFE":>5}{"proxy FD*":>11}{"recognised %":>14}'
          f'{"images/s":>10}')
    for row in results['rows'].values():
        nfe = '-' if row['nfe'] is None else str(row['nfe'])
        speed = '-' if row['images_per_s'] is None else f'{row["images_per_s"]:.1f}'
        print(f'  {row["label"]:<{width}}{nfe:>5}{row[key]:>11.2f}{row["recognised_pct"]:>14.1f}'
              f'{speed:>10}')
    info = results['classifier']
    print(f'  * {results["proxy_metric"]}; lower is better.')
    print(f'  recognised: {results["recognised_rule"]}. The digits classifier: test accuracy '
          f'{info["test_accuracy"]:.2f}%, recognises {info["test_recognised"]:.2f}% of the real '
          f'test digits and {info["outliers_recognised"]:.2f}% of synthetic non-digits.')


if __name__ == '__main__':
    sys.path.insert(0, ROOT)
    sys.exit(_cli.run_cli(PROG, main))
