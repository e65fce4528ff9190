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
   (``tools/linear_probe.py``: random init vs distilled, on the same labelled subset); print a
   table and write ``work_dirs/demo/results.json``.

    python tools/demo_repfusion.py [--work-dir work_dirs/demo] [--fresh] [--faithful-target]
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = 'classification_distill/configs/demo_digits'
TEACHER = f'{CONFIGS}/ddpm_unet-tiny_1xb64-20e_digits.py'
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


def last_checkpoint(work_dir):
    with open(os.path.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--fresh', action='store_true',
                        help='retrain the teacher even if work_dir/teacher/pipeline exists')
    parser.add_argument('--faithful-target', action='store_true',
                        help='also distil with RepFusion\'s raw pooled target (about 3 min more)')
    args = parser.parse_args()
    wd = args.work_dir
    distill = {name: (cfg, []) for name, cfg in DISTILL.items()}
    if args.faithful_target:
        name, cfg, options = FAITHFUL_TARGET
        distill[name] = (cfg, options)
    total = 1 + len(distill) + 2 * (len(distill) + 1) + 1
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
    accuracies = {}
    for name, (cfg, options) in runs.items():
        out = os.path.join(wd, f'finetune_{name}')
        step += 1
        cmd = ['tools/train.py', cfg, '--work-dir', out]
        run(step, total, f'fine-tune on {LABELLED_PER_CLASS} labels per class ({name})',
            cmd + (['--cfg-options'] + options if options else []),
            os.path.join(out, 'train.log'))
        step += 1
        metrics_file = os.path.join(out, 'test_metrics.json')
        run(step, total, f'evaluate on the 600 held-out digits ({name})',
            ['tools/test.py', cfg, last_checkpoint(out), '--work-dir', out, '--out',
             metrics_file], os.path.join(out, 'test.log'))
        with open(metrics_file) as f:
            accuracies[name] = float(json.load(f)['accuracy/top1'])

    step += 1
    probe_file = os.path.join(wd, 'linear_probe.json')
    specs = {'scratch': 'backbone:random'}
    specs.update({name: f'backbone:{ckpt}' for name, ckpt in students.items()})
    run(step, total, 'linear probe of each frozen backbone (before fine-tuning)',
        ['tools/linear_probe.py', FINETUNE_SCRATCH, '--features', *specs.values(), '--out',
         probe_file], os.path.join(wd, 'linear_probe.log'))
    with open(probe_file) as f:
        probed = json.load(f)['features']
    probes = {name: probed[spec]['top1'] for name, spec in specs.items()}

    results = dict(accuracies, linear_probe=probes, seed=SEED, labelled_per_class=LABELLED_PER_CLASS,
                   labelled_subset_size=LABELLED_PER_CLASS * 10, test_size=600,
                   minutes=round((time.time() - started) / 60, 1))
    from common.io import atomic_path  # noqa: E402 - after the runs, to keep start-up light
    with atomic_path(os.path.join(wd, 'results.json')) as tmp, open(tmp, 'w') as f:
        json.dump(results, f, indent=2)
    print('\nTest accuracy (%) on 600 held-out digits, fine-tuned on '
          f'{LABELLED_PER_CLASS * 10} labelled images (seed {SEED}):')
    print(f'  {"student init":<30}{"fine-tuned":>12}{"linear probe":>14}')
    for name, acc in accuracies.items():
        print(f'  {name:<30}{acc:>12.2f}{probes[name]:>14.2f}')
    print('  (linear probe: logistic regression on the frozen backbone before fine-tuning; '
          'scratch = its random init)')
    print(f'\nwrote {os.path.join(wd, "results.json")}; teacher samples: '
          f'{os.path.join(teacher_dir, "samples.png")}; policy timesteps: '
          f'{os.path.join(wd, "repfusion_policy", "timestep_histogram.png")}; '
          f'total {results["minutes"]} min')


if __name__ == '__main__':
    sys.path.insert(0, ROOT)
    main()
