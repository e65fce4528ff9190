"""The RepFusion story on scikit-learn's handwritten digits, end to end (``make demo``).

Every step is an ordinary config run by ``tools/train.py`` / ``tools/test.py``, so any of them
can be re-run or changed by hand (the commands are printed):

1. train a small pixel DDPM teacher on the digits' training split and export it as a diffusers
   pipeline folder (loaded through ``pretrained=`` exactly like a downloaded teacher);
2. distil it into a narrow ResNet-18 at a fixed timestep, and with RepFusion's timestep policy
   (both with the teacher target standardised per channel; ``--faithful-target`` adds a run with
   RepFusion's raw target, see classification_distill/README.md, "What we found");
3. fine-tune each distilled student and a from-scratch student on the same labelled subset
   (10 images per class, seeded) with the same schedule;
4. evaluate all on the same 600 held-out digits; probe each frozen backbone linearly
   (``tools/linear_probe.py``: random init vs distilled, on the same labelled subset), and, for
   reference, the raw pixels and the teacher's own pooled feature at t=100 and t=250; print a
   table and write ``work_dirs/demo/results.json``.

``--seeds 0 1 2`` fine-tunes (and tests) every student with each training seed
(``randomness.seed``; same labelled subset, same distilled checkpoints) and adds a per-seed table
with the means. With ``--faithful-target`` the statistics of the pooled teacher target and of the
fixed-t students' predictions (``tools/analysis/distill_target_stats.py``) are written too:
classification_distill/README.md, "What we found", quotes them.

    python tools/demo_repfusion.py [--work-dir work_dirs/demo] [--fresh] [--faithful-target]
                                   [--seeds S [S ...]]
"""
import json
import os
import subprocess
import sys
import time

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # imported, not run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROG = 'tools/demo_repfusion.py'
CONFIGS = 'classification_distill/configs/demo_digits'
TEACHER = f'{CONFIGS}/ddpm-vpred_unet-tiny_1xb32-40e_digits.py'
DISTILL = {
    'repfusion_fixed_t': f'{CONFIGS}/repfusion-fixed-t100_resnet18-w16_1xb64-20e_digits.py',
    'repfusion_policy': f'{CONFIGS}/repfusion-policy_resnet18-w16_1xb64-20e_digits.py',
}
FINETUNE_SCRATCH = f'{CONFIGS}/resnet18-w16_1xb32-100e_digits-10shot_scratch.py'
FINETUNE_DISTILLED = f'{CONFIGS}/resnet18-w16_1xb32-100e_digits-10shot_from-repfusion.py'
# the same fixed-t distillation with RepFusion's raw (unstandardised) pooled target
FAITHFUL_TARGET = ('repfusion_fixed_t_raw_target', DISTILL['repfusion_fixed_t'],
                   ['model.distill_pairs.feat.loss.target_norm=None'])
SEED = 0
LABELLED_PER_CLASS = 10
TEACHER_LAYER = 'mid_block.resnets.1.conv2'
REFERENCE_PROBES = {'pixels': 'pixels', 'teacher_t100': f'teacher:{{pipeline}}:{TEACHER_LAYER}@100',
                    'teacher_t250': f'teacher:{{pipeline}}:{TEACHER_LAYER}@250'}
STATS = 'tools/analysis/distill_target_stats.py'


def run(step, total, title, cmd, log_path):
    """Run one tool invocation, streaming its output to a log file and a one-line status."""
    print(f'[{step}/{total}] {title}\n      $ {" ".join(cmd)}', flush=True)
    start = time.time()
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, 'w') as log:
        proc = subprocess.Popen([sys.executable] + cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            log.write(line)
            if 'Epoch(train)' in line or 'Epoch(test)' in line or 'error' in line.lower():
                print('      ' + line.strip()[-150:], flush=True)
        proc.wait()
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        sys.exit(f'step {step} failed (exit {proc.returncode}); full log: {log_path}\n{tail}')
    print(f'      done in {time.time() - start:.0f} s (log: {log_path})', flush=True)


DIGITS_TEACHER_DIR = 'work_dirs/demo/teacher'  # shared by the demos


def digits_teacher_pipeline(teacher, step, total):
    """The digits DDPM pipeline folder the correspondence and segmentation demos read: ``teacher``
    when given, else ``work_dirs/demo/teacher/pipeline`` (``make demo``'s), trained there with
    ``tools/train.py`` when absent."""
    if teacher is not None:
        print(f'[{step}/{total}] teacher: {teacher}')
        return teacher
    pipeline = os.path.join(DIGITS_TEACHER_DIR, 'pipeline')
    if os.path.isfile(os.path.join(ROOT, pipeline, 'model_index.json')):
        print(f'[{step}/{total}] teacher pipeline exists at {pipeline} (the digits teacher of '
              '`make demo`)')
    else:
        run(step, total, 'train the DDPM teacher on the digits (train split; about 6 min)',
            ['tools/train.py', TEACHER, '--work-dir', DIGITS_TEACHER_DIR],
            os.path.join(ROOT, DIGITS_TEACHER_DIR, 'train.log'))
    return pipeline


def last_checkpoint(work_dir):
    with open(os.path.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--fresh', action='store_true',
                        help='retrain the teacher even if work_dir/teacher/pipeline exists')
    parser.add_argument('--faithful-target', action='store_true',
                        help='also distil with RepFusion\'s raw pooled target and write the '
                        'target statistics (about 4 min more)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[SEED], metavar='S',
                        help=f'training seeds of the fine-tuning runs (default: {SEED}); each '
                        'extra seed adds one fine-tune and one test per student (~1 min each)')
    return parser.parse_args(argv)


def finetune_and_test(step, total, wd, name, cfg, options, seed):
    """Fine-tune one student with one training seed, test it; returns (step, top-1)."""
    suffix = '' if seed == SEED else f'_seed{seed}'
    out = os.path.join(wd, f'finetune_{name}{suffix}')
    options = list(options) + ([f'randomness.seed={seed}'] if seed != SEED else [])
    step += 1
    cmd = ['tools/train.py', cfg, '--work-dir', out]
    run(step, total, f'fine-tune on {LABELLED_PER_CLASS} labels per class ({name}, seed {seed})',
        cmd + (['--cfg-options'] + options if options else []), os.path.join(out, 'train.log'))
    step += 1
    metrics_file = os.path.join(out, 'test_metrics.json')
    run(step, total, f'evaluate on the 600 held-out digits ({name}, seed {seed})',
        ['tools/test.py', cfg, last_checkpoint(out), '--work-dir', out, '--out', metrics_file],
        os.path.join(out, 'test.log'))
    with open(metrics_file) as f:
        return step, float(json.load(f)['accuracy/top1'])


def main(argv=None):
    args = parse_args(argv)
    wd = args.work_dir
    seeds = list(dict.fromkeys(args.seeds))
    distill = {name: (cfg, []) for name, cfg in DISTILL.items()}
    if args.faithful_target:
        name, cfg, options = FAITHFUL_TARGET
        distill[name] = (cfg, options)
    stats_runs = [n for n in ('repfusion_fixed_t', FAITHFUL_TARGET[0]) if n in distill] \
        if args.faithful_target else []
    total = 1 + len(distill) + 2 * (len(distill) + 1) * len(seeds) + 1 + len(stats_runs)
    step = 0
    started = time.time()

    teacher_dir = os.path.join(wd, 'teacher')
    pipeline = os.path.join(teacher_dir, 'pipeline')
    step += 1
    if args.fresh or not os.path.isfile(os.path.join(pipeline, 'model_index.json')):
        run(step, total, 'train the DDPM teacher on the digits (train split)',
            ['tools/train.py', TEACHER, '--work-dir', teacher_dir],
            os.path.join(teacher_dir, 'train.log'))
    else:
        print(f'[{step}/{total}] teacher pipeline exists at {pipeline} (use --fresh to retrain)')

    students = {}
    for name, (cfg, options) in distill.items():
        step += 1
        out = os.path.join(wd, name)
        run(step, total, f'distil the teacher into ResNet-18 ({name})',
            ['tools/train.py', cfg, '--work-dir', out, '--cfg-options',
             f'model.teacher.pretrained={pipeline}'] + options, os.path.join(out, 'train.log'))
        students[name] = last_checkpoint(out)

    runs = {'scratch': (FINETUNE_SCRATCH, [])}
    for name, ckpt in students.items():
        runs[name] = (FINETUNE_DISTILLED, [f'model.backbone.init_cfg.checkpoint={ckpt}'])
    per_seed = {name: {} for name in runs}
    for seed in seeds:
        for name, (cfg, options) in runs.items():
            step, per_seed[name][seed] = finetune_and_test(step, total, wd, name, cfg, options,
                                                           seed)
    accuracies = {name: by_seed[seeds[0]] for name, by_seed in per_seed.items()}

    step += 1
    probe_file = os.path.join(wd, 'linear_probe.json')
    specs = {'scratch': 'backbone:random'}
    specs.update({name: f'backbone:{ckpt}' for name, ckpt in students.items()})
    references = {name: spec.format(pipeline=pipeline) for name, spec in REFERENCE_PROBES.items()}
    run(step, total, 'linear probe of each frozen backbone (before fine-tuning), of the pixels '
        'and of the teacher\'s own feature',
        ['tools/linear_probe.py', FINETUNE_SCRATCH, '--features', *specs.values(),
         *references.values(), '--out', probe_file], os.path.join(wd, 'linear_probe.log'))
    with open(probe_file) as f:
        probed = json.load(f)['features']
    probes = {name: probed[spec]['top1'] for name, spec in specs.items()}
    reference_probes = {name: probed[spec]['top1'] for name, spec in references.items()}

    target_stats = {}
    for name in stats_runs:
        step += 1
        stats_file = os.path.join(wd, f'target_stats_{name}.json')
        run(step, total, f'statistics of the pooled teacher target and of the student ({name})',
            [STATS, DISTILL['repfusion_fixed_t'], students[name], '--data-config',
             FINETUNE_SCRATCH, '--cfg-options', f'model.teacher.pretrained={pipeline}',
             *distill[name][1], '--out', stats_file], os.path.join(wd, f'target_stats_{name}.log'))
        with open(stats_file) as f:
            target_stats[name] = json.load(f)

    results = dict(accuracies, linear_probe=probes, reference_linear_probe=reference_probes,
                   seed=seeds[0], labelled_per_class=LABELLED_PER_CLASS,
                   labelled_subset_size=LABELLED_PER_CLASS * 10, test_size=600,
                   minutes=round((time.time() - started) / 60, 1))
    if len(seeds) > 1:
        results['seeds'] = {name: dict(**{str(s): acc for s, acc in by_seed.items()},
                                       mean=round(sum(by_seed.values()) / len(by_seed), 2))
                            for name, by_seed in per_seed.items()}
    if target_stats:
        results['target_stats'] = target_stats
    from common.io import atomic_path  # noqa: E402 - after the runs, to keep start-up light
    with atomic_path(os.path.join(wd, 'results.json')) as tmp, open(tmp, 'w') as f:
        json.dump(results, f, indent=2)
    print_tables(results, accuracies, probes, per_seed, seeds)
    print(f'\nwrote {os.path.join(wd, "results.json")}; teacher samples: '
          f'{os.path.join(teacher_dir, "samples.png")}; policy timesteps: '
          f'{os.path.join(wd, "repfusion_policy", "timestep_histogram.png")}; '
          f'total {results["minutes"]} min')
    return 0


def print_tables(results, accuracies, probes, per_seed, seeds):
    print('\nTest accuracy (%) on 600 held-out digits, fine-tuned on '
          f'{LABELLED_PER_CLASS * 10} labelled images (seed {seeds[0]}):')
    print(f'  {"student init":<30}{"fine-tuned":>12}{"linear probe":>14}')
    for name, acc in accuracies.items():
        print(f'  {name:<30}{acc:>12.2f}{probes[name]:>14.2f}')
    for name, top1 in results['reference_linear_probe'].items():
        print(f'  {name + " (reference)":<30}{"-":>12}{top1:>14.2f}')
    print('  (linear probe: logistic regression on the frozen features before fine-tuning; '
          'scratch = its random init)')
    if len(seeds) > 1:
        print('\nFine-tuned top-1 (%) per training seed:')
        print(f'  {"student init":<30}' + ''.join(f'{"seed " + str(s):>10}' for s in seeds)
              + f'{"mean":>10}')
        for name, by_seed in per_seed.items():
            print(f'  {name:<30}' + ''.join(f'{by_seed[s]:>10.2f}' for s in seeds)
                  + f'{results["seeds"][name]["mean"]:>10.2f}')


if __name__ == '__main__':
    sys.path.insert(0, ROOT)
    sys.exit(_cli.run_cli(PROG, main))
