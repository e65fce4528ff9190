"""Image-text matching with a diffusion model on captioned digits, offline (``make demo-itm``).

No pretrained Stable Diffusion is reachable offline, so the demo trains its own small one and
then runs the subtree's real pieces on it (every step is an ordinary config run by a tool; the
commands are printed and can be re-run by hand):

1. a text-conditioned pixel DDPM at 16 x 16 (``UNet2DConditionModel`` with cross-attention at
   8 x 8, a 1-layer ``CLIPTextModel``, a word-level tokenizer built from the captions) on the
   digits' training split captioned ``"a handwritten seven"`` (``tools/train.py``; reused when its
   pipeline folder exists), and a sheet of its captioned samples (``samples.png``);
2. DSD zero-shot (``tools/test.py``, ``DSDMatcher`` / ``DSDScorer``, ``ITMRetrievalMetric``) on
   held-out digits: text retrieval among the ten captions, and binary hard-negative accuracy
   (the true caption against the caption of the digit whose mean image is nearest, e.g. 1 vs 8,
   4 vs 1; ``image_text_matching.demo.HARD_NEGATIVES``) read from the same scores, for the
   attention score, the ITM score and their sum (DSD);
3. DSD's attention-based prompt learning: LoRA on every attention projection, margin ranking
   loss with the hardest negative, on the first 5% of the training digits (``tools/train.py``);
4. step 2 again with the LoRA weights;
5. ``results.json`` (atomic), a table, and ``heatmaps.png``: test digits with the
   cross-attention map of their caption (``DSDScorer.attention_maps``) before and after LoRA.

The steps run in this process, one after the other (one start-up of torch and diffusers instead
of four); each step's output goes to its log file, with the epoch lines echoed.

    python tools/demo_itm.py [--work-dir work_dirs/demo_itm] [--quick] [--fresh]
                             [--pipeline DIR] [--num-test N] [--timesteps N] [--lora-epochs N]
"""
import contextlib
import importlib
import importlib.util
import io
import json
import os
import shlex
import sys
import time
import traceback

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # imported, not run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROG = 'tools/demo_itm.py'
CONFIGS = 'image_text_matching/configs/demo_digits'
TEXT_DDPM = f'{CONFIGS}/text-ddpm_unet-cond-tiny_1xb64-1500it_captioned-digits.py'
EVALUATE = f'{CONFIGS}/dsd_text-ddpm-digits_t10_digits-captions10.py'
LORA = f'{CONFIGS}/dsd-lora_text-ddpm-digits_1xb1-5e_digits-captions10-5pct.py'
SCORES = ('attention', 'itm', 'dsd')
NUM_TEST = 200
TIMESTEPS = 10
LORA_EPOCHS = 5
# --quick: every part tiny (a smoke run of the whole path, not a result)
QUICK = dict(num_test=4, timesteps=2, lora_epochs=1, lora_questions=3, show=2, sample_steps=4,
             samples_per_caption=1)
QUICK_TEXT_DDPM = ['model.unet.block_out_channels=(8,16)', 'model.text_encoder.hidden_size=16',
                   'model.text_encoder.intermediate_size=32',
                   'model.text_encoder.num_attention_heads=2',
                   'model.text_encoder.projection_dim=16', 'train_cfg.max_iters=2',
                   'train_dataloader.batch_size=16']
ECHO = ('Epoch(train)', 'Epoch(test)', 'Error', 'error:')


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/demo_itm')
    parser.add_argument('--quick', action='store_true',
                        help='smoke setting: a tiny model trained for 2 iterations, 4 test '
                        'digits, 2 timesteps, 3 LoRA steps (checks the path, not a result)')
    parser.add_argument('--fresh', action='store_true',
                        help='retrain the text-conditioned DDPM even if its pipeline exists')
    parser.add_argument('--pipeline', metavar='DIR',
                        help='score with this pixel text-conditioned pipeline folder instead of '
                        'training one (unet/, text_encoder/, tokenizer/, scheduler/)')
    parser.add_argument('--num-test', type=int, default=None, metavar='N',
                        help=f'held-out digits to score (1..600; default {NUM_TEST}, --quick '
                        f'{QUICK["num_test"]})')
    parser.add_argument('--timesteps', type=int, default=None, metavar='N',
                        help=f'timesteps of the score grid (default {TIMESTEPS})')
    parser.add_argument('--lora-epochs', type=int, default=None, metavar='N',
                        help=f'epochs of LoRA prompt learning over the 59 questions (default '
                        f'{LORA_EPOCHS})')
    parser.add_argument('--show', type=int, default=6, metavar='N',
                        help='test digits drawn in heatmaps.png (default 6)')
    args = parser.parse_args(argv)
    if args.num_test is not None and not 0 < args.num_test <= 600:
        parser.error(f'--num-test {args.num_test}: use 1..600 (the held-out digits)')
    _cli.check_at_least_one(parser, args, ('timesteps', 'lora_epochs', 'show'))
    if args.pipeline is not None and not os.path.isfile(
            os.path.join(args.pipeline, 'model_index.json')):
        parser.error(f'--pipeline {args.pipeline}: not a diffusers pipeline folder (no '
                     'model_index.json); pass the folder the text DDPM training exported '
                     '(<work_dir>/pipeline)')
    if args.pipeline is not None and args.fresh:
        parser.error('--fresh retrains the demo\'s own model; it cannot be combined with '
                     '--pipeline')
    quick = QUICK if args.quick else {}
    args.num_test = args.num_test or quick.get('num_test', NUM_TEST)
    args.timesteps = args.timesteps or quick.get('timesteps', TIMESTEPS)
    args.lora_epochs = args.lora_epochs or quick.get('lora_epochs', LORA_EPOCHS)
    if args.quick:
        args.show = min(args.show, QUICK['show'])
    return args


class _Echo(io.TextIOBase):
    """A text stream for one step: everything goes to the step's log file, and the lines that
    contain one of ``ECHO`` are echoed to the console. After :meth:`detach` (the step is over)
    whatever still arrives (a runner's logger keeps this stream) goes to the console."""

    def __init__(self, log, console):
        self.log, self.console, self.pending = log, console, ''

    def writable(self):
        return True

    def write(self, text):
        if self.log is None:
            return self.console.write(text)
        self.log.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split('\n')
        for line in lines:
            if any(key in line for key in ECHO):
                line = line.strip().split(' - INFO - ')[-1]
                self.console.write('      ' + (line if len(line) <= 150 else line[:147] + '...')
                                   + '\n')
                self.console.flush()
        return len(text)

    def flush(self):
        (self.log or self.console).flush()

    def detach(self):
        log, self.log = self.log, None
        log.write(self.pending)
        log.close()


def _shown(path):
    """``path`` as printed: relative to the current folder when it is inside it."""
    rel = os.path.relpath(path)
    return path if rel.startswith('..') else rel


def load_tool(name):
    """``tools/<name>.py`` as the module ``difftools_<name>`` (by path: a plain ``import test``
    could find Python's own ``test`` package first)."""
    module_name = f'difftools_{name}'
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            module_name, os.path.join(ROOT, 'tools', f'{name}.py'))
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


@contextlib.contextmanager
def timed(name, record):
    """Record the wall-clock and the CPU seconds (all threads of this process) of a step: on a
    shared machine the CPU seconds say what the step costs, the wall clock what it took."""
    wall, cpu = time.time(), time.process_time()
    yield
    record[name] = dict(wall_s=round(time.time() - wall, 1),
                        cpu_s=round(time.process_time() - cpu, 1))


def run_tool(step, total, title, tool, argv, log_path):
    """Run ``tools/<tool>.py argv`` in this process, its output to ``log_path``. A failure ends
    the demo with the log's tail."""
    shown = [os.path.relpath(a, ROOT) if os.path.isabs(a) and a.startswith(ROOT + os.sep) else a
             for a in argv]
    print(f'[{step}/{total}] {title}\n      $ python tools/{tool}.py {shlex.join(shown)}',
          flush=True)
    module = load_tool(tool)
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    stream = _Echo(open(log_path, 'w', encoding='utf-8'), sys.stdout)
    start = time.time()
    code = None
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            try:
                code = module.cli(argv)
            except Exception:  # noqa: BLE001 - reported below with the log
                traceback.print_exc()
    finally:
        stream.detach()
    if code != 0:
        with open(log_path, encoding='utf-8') as f:
            print(f.read()[-3000:], file=sys.stderr)
        raise _cli.RunError(f'step {step} ({title}) failed (its log ends above; the whole log: '
                            f'{log_path}). Fix what it names and run the demo again (a trained '
                            f'text DDPM is reused).')
    print(f'      done in {time.time() - start:.0f} s (log: {_shown(log_path)})', flush=True)


def last_checkpoint(work_dir):
    with open(os.path.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def text_ddpm_pipeline(args, wd, step, total):
    """The pipeline folder to score with: ``--pipeline``, or the demo's own (trained when absent,
    when ``--fresh``, or when it was trained with the other ``--quick`` setting)."""
    if args.pipeline is not None:
        print(f'[{step}/{total}] text-conditioned pipeline: {args.pipeline}')
        return os.path.abspath(args.pipeline)
    out = os.path.join(wd, 'text_ddpm')
    pipeline = os.path.join(out, 'pipeline')
    stamp = os.path.join(out, 'demo_settings.json')
    wanted = dict(quick=bool(args.quick), config=TEXT_DDPM)
    if not args.fresh and os.path.isfile(os.path.join(pipeline, 'model_index.json')) and \
            os.path.isfile(stamp):
        with open(stamp) as f:
            if json.load(f) == wanted:
                print(f'[{step}/{total}] text-conditioned DDPM exists at {_shown(pipeline)} '
                      f'(--fresh retrains it)')
                return pipeline
    options = QUICK_TEXT_DDPM if args.quick else []
    run_tool(step, total, 'train the text-conditioned pixel DDPM on captioned digits', 'train',
             [os.path.join(ROOT, TEXT_DDPM), '--work-dir', out]
             + (['--cfg-options', *options] if options else []), os.path.join(out, 'train.log'))
    from common.io import atomic_write_text
    atomic_write_text(stamp, json.dumps(wanted))
    return pipeline


def evaluate(step, total, title, config, checkpoint, out, options):
    """``tools/test.py`` with the per-question dump; returns the dump."""
    dump = os.path.join(out, 'questions.json')
    argv = [os.path.join(ROOT, config)] + ([checkpoint] if checkpoint else []) + [
        '--work-dir', out, '--out', dump, '--cfg-options', *options]
    run_tool(step, total, title, 'test', argv, os.path.join(out, 'test.log'))
    with open(dump, encoding='utf-8') as f:
        return json.load(f)


def summarise(dump):
    """Per score kind: the metric's 10-way accuracy and R@5 (``ITMRetrievalMetric``, from the
    dump's ``metrics``) and the binary hard-negative accuracy computed from the dumped scores
    (true caption strictly above its hard negative's; a tie is a failure, as the metric's rule)."""
    from image_text_matching.demo import HARD_NEGATIVES
    questions = dump['questions']
    metrics = dump['metrics']
    rows = {}
    for kind in SCORES:
        wins, per_digit = [], {}
        for q in questions:
            scores, target = q['scores'][kind], q['target']
            win = scores[target] > scores[HARD_NEGATIVES[target]]
            wins.append(win)
            per_digit.setdefault(target, []).append(win)
        rows[kind] = dict(
            accuracy_10way=round(metrics[f'itm/{kind}/accuracy'], 2),
            recall_at_5=round(metrics[f'itm/{kind}/R@5'], 2),
            hard_negative_accuracy=round(100.0 * sum(wins) / len(wins), 2),
            hard_negative_per_digit={
                str(d): round(100.0 * sum(w) / len(w), 1) for d, w in sorted(per_digit.items())})
    return rows


def draw_samples(pipeline_dir, path, per_caption, steps):
    """``per_caption`` DDIM samples (eta 1, no guidance) of each caption, a row per caption."""
    import numpy as np
    import torch
    from PIL import Image, ImageDraw

    from common.teachers.loading import load_diffusion_components
    from image_text_matching.demo import DIGIT_WORDS, PixelTextPipeline, digit_captions
    parts = load_diffusion_components(pipeline_dir)
    pipe = PixelTextPipeline(unet=parts.unet.eval(), text_encoder=parts.text_encoders[0].eval(),
                             tokenizer=parts.tokenizers[0], scheduler=parts.noise_scheduler)
    images = pipe(digit_captions(), num_images_per_prompt=per_caption,
                  num_inference_steps=steps, generator=torch.Generator().manual_seed(0))
    images = (images * 255).round().astype(np.uint8)
    _, h, w, _ = images.shape
    scale, pad, margin = max(1, 96 // h), 2, 44  # the left margin holds each row's digit word
    cell_h, cell_w = h * scale + pad, w * scale + pad
    sheet = Image.new('RGB', (margin + per_caption * cell_w + pad, 10 * cell_h + pad), 'white')
    draw = ImageDraw.Draw(sheet)
    for k, image in enumerate(images):
        r, c = divmod(k, per_caption)
        if c == 0:
            draw.text((2, pad + r * cell_h + h * scale // 2 - 5), DIGIT_WORDS[r], fill='black')
        tile = Image.fromarray(image).resize((w * scale, h * scale), Image.NEAREST)
        sheet.paste(tile, (margin + pad + c * cell_w, pad + r * cell_h))
    from common.io import atomic_path
    with atomic_path(path) as tmp:
        sheet.save(tmp, format='PNG')


def draw_heatmaps(pipeline_dir, lora_checkpoint, path, show, timesteps):
    """Test digits (one per class, up to ``show``) with the cross-attention map of their caption
    and of their hard negative's caption, before and after LoRA (``DSDScorer.attention_maps``)."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import MODELS

    from common.io import atomic_path, load_checkpoint
    from image_text_matching.demo import HARD_NEGATIVES, DigitsITMDataset
    importlib.import_module('image_text_matching.models.matcher')  # registers DSDMatcher

    cfg = Config.fromfile(os.path.join(ROOT, LORA))
    cfg.model.scorer.pretrained = pipeline_dir
    cfg.model.scorer.num_timesteps = timesteps
    before = MODELS.build(cfg.model.scorer)
    after = MODELS.build(cfg.model)
    state = load_checkpoint(lora_checkpoint, map_location='cpu')
    after.load_state_dict(state.get('state_dict', state))
    data = DigitsITMDataset(split='test', number=60,
                            image_size=cfg.test_dataloader.dataset.image_size)
    picked, seen = [], set()
    for item in data:
        if item['target'] not in seen:
            seen.add(item['target'])
            picked.append(item)
        if len(picked) == show:
            break
    rows = []
    with torch.no_grad():
        for item in picked:
            own, negative = item['target'], HARD_NEGATIVES[item['target']]
            texts = [item['texts'][own], item['texts'][negative]]
            rows.append((item, texts, before.attention_maps(item['images'][0], texts),
                         after.scorer.attention_maps(item['images'][0], texts)))
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(rows), 5, figsize=(10, 2.1 * len(rows)), squeeze=False)
    titles = ('digit', 'own caption\nbefore LoRA', 'own caption\nafter LoRA',
              'hard negative\nbefore LoRA', 'hard negative\nafter LoRA')
    for r, (item, texts, maps_before, maps_after) in enumerate(rows):
        image = ((item['images'][0].permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy()
        panels = [maps_before[0], maps_after[0], maps_before[1], maps_after[1]]
        low = min(float(p.min()) for p in panels)
        high = max(float(p.max()) for p in panels)
        high = high if high > low else low + 1e-6
        axes[r, 0].imshow(image)
        axes[r, 0].set_ylabel(f'digit {item["target"]}\nvs {texts[1].split()[-1]}', fontsize=8)
        for c, panel in enumerate(panels, start=1):
            axes[r, c].imshow(image[..., 0], cmap='gray')
            axes[r, c].imshow(panel.numpy(), cmap='inferno', alpha=0.7, vmin=low, vmax=high)
        for c in range(5):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(titles[c], fontsize=8)
    fig.suptitle('share of cross-attention on the caption\'s words (DSD layers, mean over '
                 f'{timesteps} timesteps; colours span each row\'s min..max)', fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=100)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    _cli.make_repo_importable()
    wd = os.path.abspath(args.work_dir)
    os.makedirs(wd, exist_ok=True)
    started = time.time()
    load_start = os.getloadavg()
    from transformers.utils import logging as transformers_logging
    transformers_logging.disable_progress_bar()  # "Loading weights" bars of every load
    total = 6
    quick = QUICK if args.quick else {}
    steps = {}
    with timed('train_text_ddpm', steps):
        pipeline = text_ddpm_pipeline(args, wd, 1, total)

    print(f'[2/{total}] captioned samples of the model: {_shown(os.path.join(wd, "samples.png"))}',
          flush=True)
    with timed('samples', steps):
        draw_samples(pipeline, os.path.join(wd, 'samples.png'),
                     quick.get('samples_per_caption', 4), quick.get('sample_steps', 50))

    common = [f'model.scorer.pretrained={pipeline}', f'model.scorer.num_timesteps={args.timesteps}',
              f'test_dataloader.dataset.number={args.num_test}']
    with timed('evaluate_before', steps):
        before = evaluate(3, total, f'DSD zero-shot on {args.num_test} held-out digits (10 '
                          f'captions each)', EVALUATE, None, os.path.join(wd, 'before'), common)

    lora_dir = os.path.join(wd, 'lora')
    lora_options = common + [f'train_cfg.max_epochs={args.lora_epochs}']
    if args.quick:
        lora_options.append(f'+train_dataloader.dataset.number={QUICK["lora_questions"]}')
    with timed('lora_training', steps):
        run_tool(4, total, 'LoRA prompt learning on the first 5% of the training digits', 'train',
                 [os.path.join(ROOT, LORA), '--work-dir', lora_dir, '--cfg-options',
                  *lora_options], os.path.join(lora_dir, 'train.log'))
    checkpoint = last_checkpoint(lora_dir)
    with timed('evaluate_after', steps):
        after = evaluate(5, total, 'the same questions with the LoRA weights', LORA, checkpoint,
                         os.path.join(wd, 'after'), common)

    print(f'[6/{total}] cross-attention heat maps before / after LoRA: '
          f'{_shown(os.path.join(wd, "heatmaps.png"))}', flush=True)
    with timed('heatmaps', steps):
        draw_heatmaps(pipeline, checkpoint, os.path.join(wd, 'heatmaps.png'), args.show,
                      args.timesteps)

    from image_text_matching.demo import HARD_NEGATIVES, DigitsITMDataset
    lora_questions = QUICK['lora_questions'] if args.quick else len(
        DigitsITMDataset(split='train', few_shot=0.05))
    summary = dict(
        rows=dict(before_lora=summarise(before), after_lora=summarise(after)),
        protocol=dict(
            task='text retrieval: each held-out digit against the ten captions "a handwritten '
                 '<digit>" (chance 10%); binary: its caption against its hard negative\'s '
                 '(chance 50%); ties count as failures',
            hard_negatives={str(k): v for k, v in HARD_NEGATIVES.items()},
            hard_negative_rule='the other digit whose mean training image is nearest in pixels',
            metric='ITMRetrievalMetric (10-way accuracy, R@5); binary accuracy from its '
                   'per-question dump',
            num_test=args.num_test, timesteps=args.timesteps, lora_epochs=args.lora_epochs,
            lora_questions=lora_questions),
        quick=bool(args.quick), pipeline=pipeline,
        configs=dict(text_ddpm=TEXT_DDPM, evaluate=EVALUATE, lora=LORA),
        lora_checkpoint=checkpoint,
        steps=steps,
        load_average=dict(start=[round(v, 2) for v in load_start],
                          end=[round(v, 2) for v in os.getloadavg()]),
        cpu_count=os.cpu_count(),
        minutes=round((time.time() - started) / 60, 1),
        cpu_minutes=round(time.process_time() / 60, 1))  # imports included
    from common.io import atomic_write_text
    atomic_write_text(os.path.join(wd, 'results.json'), json.dumps(summary, indent=2) + '\n')
    print_table(summary)
    print(f'\nwrote {os.path.join(wd, "results.json")}, {os.path.join(wd, "samples.png")} and '
          f'{os.path.join(wd, "heatmaps.png")}; total {summary["minutes"]} min '
          f'({summary["cpu_minutes"]} CPU min; load average {summary["load_average"]["start"][0]}'
          f' at the start, {os.cpu_count()} CPUs)')
    return 0


def print_table(summary):
    protocol = summary['protocol']
    print(f'\nImage-text matching on {protocol["num_test"]} held-out digits '
          f'({protocol["timesteps"]} timesteps), percent; LoRA trained on '
          f'{protocol["lora_questions"]} training digits:')
    print(f'  {"":<12}{"score":<11}{"10-way acc":>11}{"R@5":>8}{"hard-negative":>15}')
    for name, rows in summary['rows'].items():
        for i, kind in enumerate(SCORES):
            row = rows[kind]
            label = name.replace('_', ' ') if i == 0 else ''
            print(f'  {label:<12}{kind:<11}{row["accuracy_10way"]:>11.2f}'
                  f'{row["recall_at_5"]:>8.2f}{row["hard_negative_accuracy"]:>15.2f}')
    print('  (chance: 10-way 10%, R@5 50%, hard-negative 50%; dsd = attention + itm gain '
          'd_uncond - d_cond)')


if __name__ == '__main__':
    sys.path.insert(0, ROOT)
    sys.exit(_cli.run_cli(PROG, main))
