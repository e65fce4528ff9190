"""Draw images from a one-step generator or a teacher network: a PNG grid and/or one PNG per seed.

    python tools/generate_samples.py SOURCE --out grid.png [--seeds 0-63]
        [--class-ids 0,1,..|random|balanced] [--label-seed 0] [--nrow 8] [--out-dir DIR]
        [--steps N] [--device cpu|cuda] [--batch-size B]

SOURCE is one of three kinds of folder, recognised by what it holds:

* a generator folder (``generator.json``; ``tools/export_generator.py`` or ``save_generator``):
  one network evaluation per image, ``OneStepGenerator.generate``;
* an EDM network folder (``config.json`` + ``model.safetensors``; ``save_edm`` or
  ``tools/convert/edm_to_safetensors.py``), or
* a diffusers DDPM pipeline folder (``model_index.json`` or ``unet/`` + ``scheduler/``, driven
  through ``DiffusersDenoiser``): both teachers are sampled with EDM's deterministic Heun sampler,
  ``--steps`` steps (default 18 = 35 network evaluations).

The one rule: an image depends only on its seed and class. Its noise is
``pairs.pair_latents([seed], shape)`` (one ``torch.Generator`` per seed, on the CPU) whatever the
batch size or device, so the same seed gives the same image from the generator, its teacher and
external tools. Seeds are written as in EDM (``0-63``, ``0,5,9-12``). Class ids are required
exactly when SOURCE is class-conditional: a list (one id for all seeds, or one per seed),
``balanced`` (``seed % K``) or ``random`` (drawn from the seed and ``--label-seed`` alone, as
``GenerationSeedsDataset``'s 'random' labels, so the grid shows the images the test loop
scores). Images are quantised as EDM's ``generate.py`` does (``to_uint8``:
``(x * 127.5 + 128).clip(0, 255)``); the grid (``--nrow`` images per row, no padding, black
where the last row is short) and every ``{seed:06d}.png`` of ``--out-dir`` are written
atomically.

The arguments are parsed before torch, mmengine or ``common`` is imported, so ``--help`` and
argument errors answer at once. Exit codes: 0 done, 1 a SOURCE that cannot be sampled (wrong
kind of folder, class ids that do not fit), 2 a usage error.
"""
import os
import os.path as osp
import sys
import time

if osp.dirname(osp.abspath(__file__)) not in sys.path:  # imported, not run as a script
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _cli  # noqa: E402

_cli.make_repo_importable()

PROG = 'tools/generate_samples.py'
DEFAULT_STEPS = 18
MAX_SEED = 2 ** 63
KINDS = ('a generator folder (generator.json, from tools/export_generator.py), an EDM network '
         'folder (config.json + model.safetensors, from save_edm or '
         'tools/convert/edm_to_safetensors.py) or a diffusers DDPM pipeline folder '
         '(model_index.json, or unet/ + scheduler/)')


# ------------------------------------------------------------------------------------ parsing
def parse_int_list(text, what='--seeds', lowest=0, highest=MAX_SEED):
    """``'0-3,7,9-10'`` -> ``[0, 1, 2, 3, 7, 9, 10]`` (EDM's syntax: ranges include both ends).

    Raises ValueError (one sentence, naming the bad part) for empty parts, non-numbers, reversed
    ranges, values outside ``[lowest, highest)`` and repeated values."""
    values = []
    parts = str(text).split(',')
    for part in parts:
        part = part.strip()
        lo, sep, hi = part.partition('-')
        try:
            if not part:
                raise ValueError
            first, last = (int(lo), int(hi)) if sep else (int(part), int(part))
        except ValueError:
            raise ValueError(
                f'{what} {text!r}: {part!r} is not a number or a range; write non-negative '
                f'integers and ranges separated by commas, e.g. 0-63 or 0,5,9-12') from None
        if last < first:
            raise ValueError(f'{what} {text!r}: the range {part!r} runs backwards; write it '
                             f'as {last}-{first}')
        if first < lowest or last >= highest:
            raise ValueError(f'{what} {text!r}: {part!r} leaves [{lowest}, {highest - 1}]')
        if last - first >= 10_000_000:
            raise ValueError(f'{what} {text!r}: the range {part!r} holds more than 10 million '
                             f'values; draw them in several runs')
        values.extend(range(first, last + 1))
    seen, repeated = set(), []
    for v in values:
        if v in seen:
            repeated.append(v)
        seen.add(v)
    if repeated and what == '--seeds':
        raise ValueError(f'{what} {text!r}: seed {repeated[0]} is given twice (every seed '
                         f'names one image); drop the repetition')
    return values


def _seeds(text):
    import argparse
    try:
        return parse_int_list(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).split(': ', 1)[1]) from None


def _class_ids(text):
    import argparse
    if text in ('random', 'balanced'):
        return text
    try:
        return parse_int_list(text, what='--class-ids')
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            str(err).split(': ', 1)[1] + ' (or use random / balanced)') from None


def _positive(text):
    import argparse
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {text!r}')
    return value


def parse_args(argv=None):
    import argparse
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('source', metavar='SOURCE',
                        help='generator folder, EDM network folder or diffusers DDPM pipeline '
                        'folder')
    parser.add_argument('--out', metavar='GRID.png', help='write the images as one grid PNG')
    parser.add_argument('--out-dir', metavar='DIR', help='write one PNG per image, named '
                        '{seed:06d}.png (for external FID tools)')
    parser.add_argument('--seeds', type=_seeds, default=parse_int_list('0-63'), metavar='LIST',
                        help='seeds, one image each, as 0-63 or 0,5,9-12 (default 0-63)')
    parser.add_argument('--class-ids', type=_class_ids, metavar='IDS',
                        help='class ids of a class-conditional SOURCE: 3 (all seeds), a list '
                        'with one id per seed, balanced (seed %% K) or random (from the seed)')
    parser.add_argument('--label-seed', type=int, default=0, metavar='N',
                        help='seeds --class-ids random (default 0, GenerationSeedsDataset\'s '
                        'default label_seed)')
    parser.add_argument('--nrow', type=_positive, default=8, metavar='N',
                        help='images per grid row (default 8)')
    parser.add_argument('--steps', type=_positive, metavar='N',
                        help=f'Heun steps for a teacher folder (default {DEFAULT_STEPS} = '
                        f'{2 * DEFAULT_STEPS - 1} network evaluations; at least 2); a '
                        'generator takes one step')
    parser.add_argument('--device', metavar='DEVICE',
                        help='cpu, cuda or cuda:N (default: cuda when available)')
    parser.add_argument('--batch-size', type=_positive, default=64, metavar='B',
                        help='images per network call (default 64); images do not depend on it')
    args = parser.parse_args(argv)
    if args.out is None and args.out_dir is None:
        parser.error('nothing to write: pass --out GRID.png, --out-dir DIR or both')
    if args.out is not None and not args.out.lower().endswith('.png'):
        parser.error(f'--out {args.out}: the grid is a PNG; name the file *.png')
    if args.out_dir is not None and osp.lexists(args.out_dir) and not osp.isdir(args.out_dir):
        parser.error(f'--out-dir {args.out_dir}: exists and is not a folder')
    if args.label_seed < 0:
        parser.error(f'--label-seed {args.label_seed}: use an integer >= 0')
    if args.steps is not None and args.steps < 2:
        parser.error(f'--steps {args.steps}: the Heun sampler needs at least 2 steps')
    if args.device is not None and args.device.split(':')[0] not in ('cpu', 'cuda'):
        parser.error(f"--device {args.device}: use 'cpu', 'cuda' or 'cuda:N'")
    if not osp.isdir(args.source):
        parser.error(f'SOURCE {args.source!r} is not a folder (relative paths are resolved from '
                     f'{os.getcwd()!r}); expected {KINDS}')
    return args


# ------------------------------------------------------------------------------------ sources
def source_kind(folder):
    """``'generator'``, ``'edm'`` or ``'diffusers'`` from the files in ``folder``; RunError
    naming the accepted kinds otherwise."""
    def has(*names):
        return all(osp.exists(osp.join(folder, n)) for n in names)
    if has('generator.json'):
        return 'generator'
    if has('config.json', 'model.safetensors'):
        return 'edm'
    if has('model_index.json') or has('unet', 'scheduler'):
        return 'diffusers'
    found = sorted(os.listdir(folder))
    held = ', '.join(found[:6]) + (f' (and {len(found) - 6} more)' if len(found) > 6 else '')
    raise _cli.RunError(
        f'SOURCE {folder} is none of the folders this tool samples: expected {KINDS}; it holds '
        f'{held or "nothing"}. Point SOURCE at one of those.')


def load_source(folder, kind, device):
    """The sampler of ``folder``: ``(OneStepGenerator, None)`` for a generator folder, or
    ``(OneStepGenerator around the teacher, teacher)``; the wrapper gives image shape, class
    count and labels either way."""
    from generation_dmd.generator import OneStepGenerator, load_generator
    if kind == 'generator':
        return load_generator(folder, map_location=device), None
    if kind == 'edm':
        from generation_dmd.networks import load_edm
        net = load_edm(folder, map_location=device)
    else:
        from generation_dmd.adapters import DiffusersDenoiser
        try:
            net = DiffusersDenoiser(pretrained=folder).to(device).eval()
        except ValueError as err:  # e.g. a text-to-image pipeline: one paragraph, exit 1
            raise _cli.RunError(f'SOURCE {folder} holds a diffusers pipeline this tool cannot '
                                f'sample: {err}') from err
    top = float(getattr(net, 'sigma_max', 80.0))
    wrapper = OneStepGenerator(net, sigma=min(80.0, top))  # only for its facts and labels()
    return wrapper.eval(), net


def class_ids_for(seeds, class_ids, num_classes, source, label_seed=0):
    """One class id per seed (or None when unconditional), checked against ``num_classes``.

    'random' labels are those of ``GenerationSeedsDataset(labels='random', label_seed=...)``
    (``numpy.random.default_rng([label_seed, seed])``), so a grid shows the very images the
    test loop scores for the same seeds; 'balanced' is ``seed % num_classes``."""
    if num_classes is None:
        if class_ids is not None:
            raise _cli.RunError(
                f'SOURCE {source} is unconditional, but --class-ids {class_ids!r} was given; '
                f'drop --class-ids.')
        return None
    if class_ids is None:
        raise _cli.RunError(
            f'SOURCE {source} is class-conditional ({num_classes} classes): pass --class-ids, '
            f'as one id for all seeds (e.g. 0), one id per seed (0,1,2,...), balanced '
            f'(seed % {num_classes}) or random (drawn from the seed).')
    if class_ids == 'balanced':
        return [s % num_classes for s in seeds]
    if class_ids == 'random':
        import numpy as np
        return [int(np.random.default_rng([label_seed, s]).integers(num_classes)) for s in seeds]
    if len(class_ids) == 1:
        class_ids = class_ids * len(seeds)
    if len(class_ids) != len(seeds):
        raise _cli.RunError(
            f'--class-ids gives {len(class_ids)} ids for {len(seeds)} seeds: give one id for '
            f'all seeds or exactly one per seed (or use balanced / random).')
    bad = [c for c in class_ids if c >= num_classes]
    if bad:
        raise _cli.RunError(
            f'--class-ids: {bad[0]} is not a class of SOURCE {source}, which has {num_classes} '
            f'classes (ids 0-{num_classes - 1}).')
    return list(class_ids)


def sample(generator, teacher, seeds, class_ids, steps, batch_size, device):
    """float images ``[N, C, H, W]`` batch by batch (a generator of ``(seeds, images)``)."""
    import torch

    from common.progress import progress
    from generation_dmd.pairs import pair_latents
    from generation_dmd.sampling import edm_sampler
    starts = range(0, len(seeds), batch_size)
    for start in progress(starts, 'sampling', total=len(starts)):
        chunk = seeds[start:start + batch_size]
        ids = None if class_ids is None else class_ids[start:start + batch_size]
        if teacher is None:
            images = generator.generate(chunk, ids, batch_size=batch_size, device=device)
        else:
            latents = pair_latents(chunk, generator.image_shape, device=device)
            labels = generator.labels(ids, len(chunk), device)
            with torch.no_grad():
                images = edm_sampler(teacher, latents, labels, num_steps=steps)
        yield chunk, images


# ------------------------------------------------------------------------------------ writing
def to_pil(image):
    """A uint8 ``[C, H, W]`` tensor as a PIL image (1 channel: L, 3: RGB)."""
    from PIL import Image
    array = image.permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)


def save_png(image, path):
    """``image`` (PIL) written to ``path`` atomically."""
    from common.io.atomic import atomic_path
    with atomic_path(path, fsync=False) as tmp:
        image.save(tmp, format='PNG')


def make_grid(images, nrow):
    """uint8 ``[N, C, H, W]`` -> ``[C, rows * H, min(nrow, N) * W]``, row-major, no padding;
    cells past the last image stay 0."""
    import torch
    n, c, h, w = images.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    grid = torch.zeros((c, rows * h, cols * w), dtype=torch.uint8)
    for k in range(n):
        r, q = divmod(k, cols)
        grid[:, r * h:(r + 1) * h, q * w:(q + 1) * w] = images[k]
    return grid


def _main(argv=None):
    args = parse_args(argv)
    kind = source_kind(args.source)
    if kind == 'generator' and args.steps is not None:
        raise _cli.UsageError(
            f'--steps {args.steps}: SOURCE {args.source} is a one-step generator folder; '
            f'--steps applies to teacher folders (EDM network or DDPM pipeline). Drop --steps.')
    import torch
    from generation_dmd.generator import to_uint8
    if args.device is None:
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    elif args.device.startswith('cuda') and not torch.cuda.is_available():
        raise _cli.UsageError(f'--device {args.device}, but torch sees no CUDA device; use '
                              f'--device cpu.')
    generator, teacher = load_source(args.source, kind, args.device)
    if generator.image_shape[0] not in (1, 3):
        raise _cli.RunError(f'SOURCE {args.source} makes {generator.image_shape[0]}-channel '
                            f'images; PNG output needs 1 (grey) or 3 (RGB) channels.')
    class_ids = class_ids_for(args.seeds, args.class_ids, generator.num_classes, args.source,
                              args.label_seed)
    steps = args.steps or DEFAULT_STEPS
    nfe = 1 if teacher is None else 2 * steps - 1
    what = ('one-step generator' if teacher is None else
            f'{"EDM" if kind == "edm" else "diffusers DDPM"} teacher, Heun {steps} steps')
    print(f'{PROG}: {args.source}: {what}, {len(args.seeds)} images '
          f'{tuple(generator.image_shape)} on {args.device}', flush=True)
    if args.out_dir is not None:
        os.makedirs(args.out_dir, exist_ok=True)
    kept, seconds = [], 0.0
    batches = sample(generator, teacher, args.seeds, class_ids, steps, args.batch_size,
                     args.device)
    while True:
        start = time.perf_counter()
        try:
            chunk, images = next(batches)
        except StopIteration:
            break
        images = to_uint8(images).cpu()  # .cpu() waits for the device: the timing is complete
        seconds += time.perf_counter() - start
        if args.out is not None:
            kept.append(images)
        if args.out_dir is not None:
            for seed, image in zip(chunk, images):
                save_png(to_pil(image), osp.join(args.out_dir, f'{seed:06d}.png'))
    rate = len(args.seeds) / seconds if seconds > 0 else float('inf')
    print(f'{len(args.seeds)} images in {seconds:.2f} s: {rate:.2f} images/s ({nfe} network '
          f'evaluation{"s" if nfe > 1 else ""} per image, batch {args.batch_size})', flush=True)
    if args.out is not None:
        grid = make_grid(torch.cat(kept), args.nrow)
        save_png(to_pil(grid), args.out)
        print(f'grid {grid.shape[2]} x {grid.shape[1]} px written to {args.out}')
    if args.out_dir is not None:
        print(f'{len(args.seeds)} PNGs written to {args.out_dir}')


KNOWN_ERRORS = ['generation_dmd.generator:GeneratorLoadError',
                'generation_dmd.networks:EDMLoadError']


def main(argv=None):
    """Run the command line; returns the exit code (0, 1 or 2) instead of raising."""
    return _cli.run_cli(PROG, lambda a: _cli.run_reporting(_main, a, KNOWN_ERRORS,
                                                           catch=(RuntimeError, )), argv)


if __name__ == '__main__':
    sys.exit(main())
