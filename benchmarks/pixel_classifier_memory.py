"""Peak RAM and time of ddpm-segmentation's pixel-classifier training: ours vs its in-RAM layout.

Ours: native-resolution maps in a ``NativeFeatureStore`` (float16 on disk), training pixels drawn
by ``PixelSampler`` (upsampled on the fly) and the ten MLPs trained in one pass as a
``PixelMLPEnsemble``. The reference (``train_interpreter.py``, notes ``seg_sae_dsd.md`` A.3/A.4,
re-implemented here): ``X = zeros(N, D, S, S)`` float32 filled with the bilinearly upsampled
features, ``X.permute(1, 0, 2, 3).reshape(D, -1).permute(1, 0)``, the ignore pixels dropped by a
boolean index, a shuffled ``DataLoader`` (batch 64, drop_last) and ten MLPs trained one after the
other with the same early-stopping rule.

The one rule: each side runs in its OWN fresh process, and its peak RSS is reported as the
kernel's high-water mark (VmHWM, reset after the imports) minus the RSS at that point, so the two
numbers measure training, not the Python/torch start-up.

  (a) measured side by side on the same images and feature set: the digits DDPM teacher of
      ``make demo`` (32 px, the segmentation demo's blocks 1, 3, 5 at t = 50, 150) on the
      ``digits_11`` task (20 train / 20 test images); both mIoUs (``compute_iou`` on the same
      test images), peak RSS and time;
  (a2) measured side by side on random native maps of the 256-px ADM's layout (blocks 5, 6, 7, 8,
      12 at t = 50, 150, 250: 8448-d) at a reduced image size both sides fit (64 px, 8 images),
      ``--iters`` iterations per model: the memory ratio with the real feature width, measured;
  (b) the issue's headline cases ffhq_34 (20 images) and bedroom_28 (40 images) with the 256-px
      ADM's feature set (blocks 5, 6, 7, 8, 12 at t = 50, 150, 250: 8448-d at 256 x 256): the
      reference by formula (~88 / ~177 GB, it cannot fit), ours MEASURED on random ADM-shaped
      native maps written to a store (the memory layout is the real one), training the ensemble
      for ``--iters`` iterations; ratio reference / ours (target >= 20x).

    python benchmarks/pixel_classifier_memory.py [--teacher DIR] [--train 20] [--test 20]
        [--reduced-size 64] [--reduced-images 8] [--headline ffhq_34 bedroom_28 | none]
        [--iters 20] [--out results.json]
"""
import argparse
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import tempfile
import time

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(HERE)
for _p in (ROOT, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)
if osp.join(ROOT, 'tools') not in sys.path:  # last: tools/test.py etc. shadow nothing
    sys.path.append(osp.join(ROOT, 'tools'))
import _cli  # noqa: E402

PROG = 'benchmarks/pixel_classifier_memory.py'
DEFAULT_TEACHER = osp.join(ROOT, 'work_dirs', 'demo', 'teacher', 'pipeline')
HEADLINE_CASES = ('ffhq_34', 'bedroom_28')
HEADLINE_IMAGES = dict(ffhq_34=20, bedroom_28=40)  # the reference configs' training_number
REDUCED_CASE = 'ffhq_34'  # (a2): its 34 classes (the large MLP) on random ADM-shaped maps
#: The 256-px ADM of ddpm-segmentation (seg_sae_dsd.md A.2), for its block shapes.
ADM_256_FLAGS = dict(image_size=256, num_channels=256, num_res_blocks=2,
                     attention_resolutions='32,16,8', num_head_channels=64, learn_sigma=True,
                     resblock_updown=True, use_scale_shift_norm=True)
NUM_MODELS = 10
BATCH = 64


# ------------------------------------------------------------------------------- arguments
def _positive(text):
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise ValueError(f'{text!r} is not a positive integer')
    return value


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    parser.add_argument('--teacher', default=DEFAULT_TEACHER,
                        help='pixel DDPM pipeline folder for part (a) (default: the digits '
                             'teacher of `make demo`, work_dirs/demo/teacher/pipeline)')
    parser.add_argument('--blocks', default='1,3,5', help='output blocks for (a) (default 1,3,5)')
    parser.add_argument('--steps', default='50,150', help='timesteps for (a) (default 50,150)')
    parser.add_argument('--image-size', type=int, default=32, help='image side for (a) (32)')
    parser.add_argument('--train', type=int, default=20, help='labelled train images (a)')
    parser.add_argument('--test', type=int, default=20, help='test images (a)')
    parser.add_argument('--max-epochs', type=int, default=100,
                        help="epoch limit of (a) (the reference's 100; early stopping ends sooner)")
    parser.add_argument('--headline', nargs='+', default=list(HEADLINE_CASES),
                        help='headline cases for (b): ffhq_34, bedroom_28, or none')
    parser.add_argument('--headline-images', type=int, default=None,
                        help="images per headline case (default: the dataset's train count)")
    parser.add_argument('--headline-size', type=int, default=256,
                        help='image side of the random ADM-shaped maps in (b) (256)')
    parser.add_argument('--iters', type=int, default=20,
                        help='ensemble training iterations measured in (b) (20)')
    parser.add_argument('--buffer-pixels', type=int, default=4096,
                        help="PixelSampler's buffer_pixels in (b) (4096)")
    parser.add_argument('--reduced-size', type=int, default=64,
                        help='image side of (a2), the ADM layout at a size both sides fit (64)')
    parser.add_argument('--reduced-images', type=int, default=8,
                        help='images of (a2); 0 skips it (8)')
    parser.add_argument('--skip-a', action='store_true', help='skip part (a)')
    parser.add_argument('--same-process', action='store_true',
                        help='run the sides in this process (smoke tests only: the peak RSS '
                             'numbers then share one process and are not comparable)')
    parser.add_argument('--work-dir', default=None, help='folder for stores and data (temp)')
    parser.add_argument('--out', default=None, help='write the results as JSON here')
    parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ('train', 'test', 'iters', 'max_epochs', 'image_size', 'headline_size',
                 'buffer_pixels', 'reduced_size'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} {getattr(args, name)}: must be at least 1')
    if args.reduced_images < 0:
        parser.error(f'--reduced-images {args.reduced_images}: must be 0 (skip) or more')
    if args.headline_images is not None and args.headline_images < 1:
        parser.error(f'--headline-images {args.headline_images}: must be at least 1')
    if args.headline == ['none']:
        args.headline = []
    bad = [c for c in args.headline if c not in HEADLINE_CASES]
    if bad:
        parser.error(f'--headline {" ".join(bad)}: unknown case; choose from '
                     f'{", ".join(HEADLINE_CASES)} (or none)')
    for name in ('blocks', 'steps'):
        try:
            setattr(args, name, [_positive(v) if name == 'steps' else int(v)
                                 for v in getattr(args, name).split(',')])
        except ValueError:
            parser.error(f'--{name} {getattr(args, name)}: expected comma-separated integers '
                         f'such as {"1,3,5" if name == "blocks" else "50,150"}')
    if args.out and not args.out.endswith('.json'):
        parser.error(f'--out {args.out}: the results are JSON; give a path ending in .json')
    if not args.skip_a and not args.child and not osp.isdir(osp.join(args.teacher, 'unet')):
        parser.error(f'--teacher {args.teacher}: no pixel DDPM pipeline there (expected '
                     f'{args.teacher}/unet/); run `make demo` to train the digits teacher, pass '
                     f'--teacher DIR, or --skip-a')
    return args


# ------------------------------------------------------------------------------- memory
def _status_bytes(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f'{field} not in /proc/self/status')


class PeakRSS:
    """Peak RSS above the RSS at ``start()`` (VmHWM after resetting it via clear_refs; where the
    reset is not allowed, ru_maxrss, which then includes the start-up)."""

    def start(self):
        try:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')
            self.resettable = True
        except OSError:
            self.resettable = False
        self.base = _status_bytes('VmRSS')
        return self

    def peak(self):
        if self.resettable:
            return _status_bytes('VmHWM')
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def above_base(self):
        return self.peak() - self.base


# ------------------------------------------------------------------------------- reference
def reference_mlp(in_dim, num_classes):
    """The reference's pixel_classifier (DatasetGAN's), init N(0, 0.02) weights, zero biases."""
    from torch import nn
    from segmentation.models.pixel_ensemble import hidden_sizes
    h1, h2 = hidden_sizes(num_classes)
    mlp = nn.Sequential(nn.Linear(in_dim, h1), nn.ReLU(), nn.BatchNorm1d(h1),
                        nn.Linear(h1, h2), nn.ReLU(), nn.BatchNorm1d(h2),
                        nn.Linear(h2, num_classes))
    for m in mlp:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
    return mlp


def reference_rows(upsampled, masks, ignore_label):
    """The reference's training matrix: ``X = zeros(N, D, S, S)`` float32 filled image by image
    from ``upsampled`` (an iterable of ``[D, S, S]``, one per mask), then ``X.permute(1, 0, 2,
    3).reshape(D, -1).permute(1, 0)`` and the rows whose label is ``ignore_label`` dropped by a
    boolean index. Returns ``(X [P, D], y [P])``."""
    import torch
    n = len(masks)
    x = y = None
    for i, (feat, mask) in enumerate(zip(upsampled, masks)):
        if x is None:
            d, s, _ = feat.shape
            x = torch.zeros(n, d, s, s, dtype=torch.float32)
            y = torch.zeros(n, s, s, dtype=torch.uint8)
        x[i] = feat
        y[i] = torch.as_tensor(mask)
    x = x.permute(1, 0, 2, 3).reshape(d, -1).permute(1, 0)
    y = y.flatten()
    keep = y != ignore_label
    return x[keep], y[keep]


def reference_train(x, y, num_classes, num_models=NUM_MODELS, max_epochs=100, seed=0,
                    max_iterations=None):
    """Ten MLPs one after the other on a shuffled DataLoader over the rows (Adam 1e-3, batch 64,
    drop_last; from the 5th epoch a batch loss not below the best grows a counter, stop when it
    exceeds 50); ``max_iterations`` bounds each model's iterations (benchmarks only). Returns
    the trained models and the total iterations."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    torch.manual_seed(seed)
    models, iterations = [], 0
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(num_models):
        mlp = reference_mlp(x.shape[1], num_classes).train()
        optimizer = torch.optim.Adam(mlp.parameters(), lr=1e-3)
        loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True, drop_last=True)
        best, count, done, stop = None, 0, 0, False
        for epoch in range(max_epochs):
            for xb, yb in loader:
                loss = loss_fn(mlp(xb), yb.long())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                iterations += 1
                done += 1
                if epoch > 3:
                    if best is None or loss.item() < best:
                        best, count = loss.item(), 0
                    else:
                        count += 1
                    if count > 50:
                        stop = True
                if stop or (max_iterations is not None and done >= max_iterations):
                    stop = True
                    break
            if stop:
                break
        models.append(mlp.eval())
    return models, iterations


# ------------------------------------------------------------------------------- part (a)
def _load_digits_task(data_root, train, test, image_size):
    from segmentation.datasets.ddpm_seg import load_ddpm_seg_split
    split = {s: load_ddpm_seg_split(data_root, 'digits_11', s, n, image_size=image_size)
             for s, n in (('train', train), ('test', test))}
    return split


def _images_tensor(items):
    import numpy as np
    import torch
    arr = np.stack([it['image'] for it in items]).astype(np.float32)
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


def _extractor(teacher, blocks, steps, image_size):
    from segmentation.pixel_features import PixelFeatureExtractor
    return PixelFeatureExtractor(teacher=dict(pretrained=teacher), blocks=blocks, steps=steps,
                                 image_size=image_size)


def side_a(kind, args, data_root, work_dir):
    """One side of part (a) in this process; returns a JSON-able dict."""
    import torch
    import torch.nn.functional as F
    from segmentation.datasets.ddpm_seg import dataset_info
    from segmentation.evaluation.ddpm_seg_metric import compute_iou
    from segmentation.models.pixel_ensemble import predict_labels
    info = dataset_info('digits_11')
    num_classes, ignore = info.number_class, info.ignore_label
    split = _load_digits_task(data_root, args.train, args.test, args.image_size)
    extractor = _extractor(args.teacher, args.blocks, args.steps, args.image_size)
    s = args.image_size
    torch.manual_seed(0)
    meter = PeakRSS().start()
    start = time.perf_counter()
    train_images = _images_tensor(split['train'])
    test_images = _images_tensor(split['test'])
    preds = []
    if kind == 'reference':
        def upsampled(images):
            for i in range(len(images)):
                maps = extractor.native(images[i:i + 1])
                yield torch.cat([F.interpolate(m, size=(s, s), mode='bilinear',
                                               align_corners=False) for m in maps], 1)[0]
        x, y = reference_rows(upsampled(train_images),
                              [it['mask'] for it in split['train']], ignore)
        t_train = time.perf_counter()
        models, iterations = reference_train(x, y, num_classes, max_epochs=args.max_epochs)
        t_train = time.perf_counter() - t_train
        with torch.no_grad():
            for feat in upsampled(test_images):
                rows = feat.reshape(feat.shape[0], -1).t()
                logits = torch.stack([m(rows) for m in models])
                preds.append(predict_labels(logits)[0].reshape(s, s).numpy())
    else:
        from segmentation.models.pixel_ensemble import PixelMLPEnsemble, train_ensemble
        from segmentation.pixel_features import NativeFeatureStore, PixelSampler
        store = NativeFeatureStore(osp.join(work_dir, 'store_a'), extractor.settings())
        keys = {f'train/{i:04d}': img for i, img in enumerate(train_images)}
        test_keys = {f'test/{i:04d}': img for i, img in enumerate(test_images)}
        store.write(extractor, list(keys.items()) + list(test_keys.items()), show_progress=False)
        masks = {k: it['mask'] for k, it in zip(keys, split['train'])}
        sampler = PixelSampler(store, masks, ignore, batch_size=BATCH)
        ensemble = PixelMLPEnsemble(extractor.dim, num_classes, NUM_MODELS)
        t_train = time.perf_counter()
        result = train_ensemble(ensemble, sampler, max_epochs=args.max_epochs)
        t_train = time.perf_counter() - t_train
        iterations = result['iterations'] * NUM_MODELS
        with torch.no_grad():
            for key in test_keys:
                maps = store.get(key)
                rows = torch.cat([c.reshape(c.shape[0], -1).t() for c in
                                  extractor.upsampled_chunks(maps, chunk_rows=s)])
                preds.append(predict_labels(ensemble(rows))[0].reshape(s, s).numpy())
    seconds = time.perf_counter() - start
    peak = meter.above_base()
    gts = [it['mask'] for it in split['test']]
    iou = compute_iou(preds, gts, num_classes, ignore)
    skip = compute_iou(preds, gts, num_classes, ignore, absent='skip')
    return dict(side=kind, peak_rss=peak, peak_resettable=meter.resettable, seconds=seconds,
                train_seconds=t_train, model_iterations=iterations, miou=iou['mIoU'],
                miou_skip_absent=skip['mIoU'], dim=extractor.dim,
                native_shapes=[list(v) for v in extractor.native_shapes])


# ------------------------------------------------------------------------------- part (b)
def adm_native_shapes(image_size=256):
    """``[(C, h, w)]`` of the 256-px ADM's default blocks at t = 50, 150, 250, for an input of
    ``image_size`` pixels (for t: for b)."""
    from segmentation.pixel_features import DEFAULT_BLOCKS, DEFAULT_STEPS, adm_output_block_shape
    per_t = [adm_output_block_shape(ADM_256_FLAGS, b, image_size) for b in DEFAULT_BLOCKS]
    return [(c, s, s) for _ in DEFAULT_STEPS for c, s in per_t]


def reference_peak_bytes(n_images, dim, image_size):
    """The reference's peak: ``X`` float32 twice (its permute/reshape and boolean-index copies)
    plus the uint8 labels; ``memory_report``'s ``reference_peak``."""
    x = n_images * dim * image_size * image_size * 4
    return 2 * x + n_images * image_size * image_size


def random_masks(n, size, num_classes, ignore_label, seed=0):
    """Blocky random label maps (8 x 8 cells of random classes; ignore pixels included)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    cells = max(size // 8, 1)
    masks = torch.randint(0, num_classes, (n, 1, cells, cells), generator=g).float()
    masks = torch.nn.functional.interpolate(masks, size=(size, size), mode='nearest')
    return [m[0].to(torch.uint8).numpy() for m in masks]


def _random_native(shapes, n, seed=0):
    """Random ADM-shaped float16 native maps, image by image (the same for both sides)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        yield [torch.randn(c, h, w, generator=g).half() for c, h, w in shapes]


def side_adm(kind, case, args, work_dir, n, size):
    """One side's training on random ADM-shaped native maps of ``case``'s classes (measured):
    ``'ours'`` (store + sampler + batched ensemble) or ``'reference'`` (in-RAM layout, ten MLPs
    one after the other), ``--iters`` iterations per model."""
    import torch
    import torch.nn.functional as F
    from segmentation.datasets.ddpm_seg import dataset_info
    from segmentation.models.pixel_ensemble import PixelMLPEnsemble, train_ensemble
    from segmentation.pixel_features import NativeFeatureStore, PixelSampler, memory_report
    info = dataset_info(case)
    shapes = adm_native_shapes(size)
    dim = sum(c for c, _, _ in shapes)
    masks = random_masks(n, size, info.number_class, info.ignore_label)
    meter = PeakRSS().start()
    start = time.perf_counter()
    extra = {}
    if kind == 'reference':
        def upsampled():
            for maps in _random_native(shapes, n):
                yield torch.cat([F.interpolate(m[None].float(), size=(size, size),
                                               mode='bilinear', align_corners=False)
                                 for m in maps], 1)[0]
        x, y = reference_rows(upsampled(), masks, info.ignore_label)
        t_write = time.perf_counter() - start
        t0 = time.perf_counter()
        models, iterations = reference_train(x, y, info.number_class, max_iterations=args.iters)
        t_train = time.perf_counter() - t0
        hidden = [models[0][0].out_features, models[0][3].out_features]
        params = sum(p.numel() * p.element_size() for m in models for p in m.parameters())
    else:
        store = NativeFeatureStore(osp.join(work_dir, f'store_{case}_{size}px_{n}'), dict(
            kind='random_adm_shaped', image_size=size, native_shapes=[list(v) for v in shapes],
            dim=dim))
        for i, maps in enumerate(_random_native(shapes, n)):  # one image at a time, as
            store.put(f'train/{i:04d}', maps)  # NativeFeatureStore.write does
        t_write = time.perf_counter() - start
        sampler = PixelSampler(store, {f'train/{i:04d}': m for i, m in enumerate(masks)},
                               info.ignore_label, batch_size=BATCH,
                               buffer_pixels=args.buffer_pixels)
        ensemble = PixelMLPEnsemble(dim, info.number_class, NUM_MODELS)
        iters = args.iters

        def bounded(epoch):
            for i, batch in enumerate(sampler):
                if i >= iters:
                    return
                yield batch

        t0 = time.perf_counter()
        iterations = train_ensemble(ensemble, bounded, max_epochs=1)['iterations'] * NUM_MODELS
        t_train = time.perf_counter() - t0
        hidden = list(ensemble.hidden)
        params = sum(p.numel() * p.element_size() for p in ensemble.parameters())
        extra = dict(store_disk=sum(osp.getsize(osp.join(d, f))
                                    for d, _, fs in os.walk(store.root) for f in fs),
                     formula_ours_peak=memory_report(n, shapes, size,
                                                     args.buffer_pixels)['ours_peak'])
    peak = meter.above_base()
    return dict(side=kind, case=case, n_images=n, image_size=size, dim=dim, peak_rss=peak,
                peak_resettable=meter.resettable, write_seconds=t_write,
                train_seconds=t_train, model_iterations=iterations,
                seconds_per_model_iteration=t_train / max(iterations, 1),
                reference_peak=reference_peak_bytes(n, dim, size), hidden=hidden,
                # parameters, gradients and Adam's two moments (memory_report leaves them out)
                model_and_adam=4 * params, **extra)


# ------------------------------------------------------------------------------- driver
def _child_argv(args, extra):
    argv = [sys.executable, osp.abspath(__file__), '--teacher', args.teacher,
            '--blocks', ','.join(map(str, args.blocks)), '--steps', ','.join(map(str, args.steps)),
            '--image-size', str(args.image_size), '--train', str(args.train), '--test',
            str(args.test), '--max-epochs', str(args.max_epochs), '--iters', str(args.iters),
            '--headline-size', str(args.headline_size), '--buffer-pixels',
            str(args.buffer_pixels), '--reduced-size', str(args.reduced_size),
            '--reduced-images', str(args.reduced_images), '--headline', 'none']
    if args.headline_images:
        argv += ['--headline-images', str(args.headline_images)]
    return argv + extra


def _side(args, spec, data_root, work_dir):
    part, name = spec.split(':')
    if part == 'a':
        return side_a(name, args, data_root, work_dir)
    if part == 'r':  # reduced-size ADM layout, both sides measured
        return side_adm(name, REDUCED_CASE, args, work_dir, args.reduced_images,
                        args.reduced_size)
    n = args.headline_images or HEADLINE_IMAGES[name]
    return side_adm('ours', name, args, work_dir, n, args.headline_size)


def run_side(args, spec, data_root, work_dir):
    """``spec``: 'a:reference', 'a:ours', 'r:reference', 'r:ours' or 'b:<case>'; in a fresh
    process unless ``--same-process``."""
    if args.same_process:
        return _side(args, spec, data_root, work_dir)
    proc = subprocess.run(_child_argv(args, ['--child', spec, '--work-dir', work_dir]),
                          capture_output=True, text=True, env=dict(os.environ, DATA_ROOT=data_root))
    if proc.returncode:
        raise RuntimeError(f'{PROG}: the {spec} side failed:\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


GB, MIB = 1e9, 2**20


def _seconds(side):
    return side['seconds'] if 'seconds' in side else side['write_seconds'] + side['train_seconds']


def _print_sides(ref, ours, what):
    for side in (ref, ours):
        line = (f'  {side["side"]:>9}: peak RSS +{side["peak_rss"] / MIB:.1f} MiB, '
                f'{_seconds(side):.1f} s '
                f'(training {side["train_seconds"]:.1f} s, {side["model_iterations"]} '
                f'model-iterations)')
        if 'miou' in side:
            line += (f', mIoU {100 * side["miou"]:.2f} (skip absent '
                     f'{100 * side["miou_skip_absent"]:.2f})')
        print(line)
    ratio = ref['peak_rss'] / max(ours['peak_rss'], 1)
    t_ref, t_ours = _seconds(ref), _seconds(ours)
    print(f'  ratio reference/ours ({what}): peak RSS {ratio:.2f}x, time {t_ref / t_ours:.2f}x')
    return dict(reference=ref, ours=ours, memory_ratio=ratio, speedup=t_ref / t_ours)


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        out = _side(args, args.child, os.environ.get('DATA_ROOT', ''), args.work_dir)
        print(json.dumps(out))
        return out
    work_dir = args.work_dir or tempfile.mkdtemp(prefix='pixel-classifier-memory-')
    os.makedirs(work_dir, exist_ok=True)
    try:
        return _run(args, work_dir)
    finally:
        if args.work_dir is None:  # the stores hold GBs: a temporary work dir goes away
            shutil.rmtree(work_dir, ignore_errors=True)


def _run(args, work_dir):
    from _timing import device_name
    print(f'device: {device_name("cpu")}; each side in its own process: peak RSS above the '
          f'RSS after imports' + (' (SAME PROCESS: smoke run, not comparable)'
                                  if args.same_process else ''))
    results = dict(part_a=None, part_a2=None, part_b=[])
    if not args.skip_a:
        from segmentation.datasets.digits_seg import write_digits_seg_release
        data_root = osp.join(work_dir, 'data')
        write_digits_seg_release(data_root, num_train=args.train, num_test=args.test,
                                 image_size=args.image_size)
        sides = {k: run_side(args, f'a:{k}', data_root, work_dir) for k in ('reference', 'ours')}
        print(f'(a) digits_11, teacher {args.teacher}, blocks {args.blocks} t {args.steps}, '
              f'{sides["ours"]["dim"]}-d at {args.image_size} px, {args.train} train / '
              f'{args.test} test images, {NUM_MODELS} MLPs, the reference\'s early stopping:')
        results['part_a'] = _print_sides(sides['reference'], sides['ours'], 'digits')
    if args.reduced_images:
        sides = {k: run_side(args, f'r:{k}', '', work_dir) for k in ('reference', 'ours')}
        print(f'(a2) random ADM-shaped maps ({REDUCED_CASE} classes), {sides["ours"]["dim"]}-d '
              f'at {args.reduced_size} px, {args.reduced_images} images, {args.iters} '
              f'iterations per model (reference peak by formula '
              f'{sides["ours"]["reference_peak"] / MIB:.0f} MiB):')
        results['part_a2'] = _print_sides(sides['reference'], sides['ours'], 'ADM layout')
    for case in args.headline:
        r = run_side(args, f'b:{case}', '', work_dir)
        r['ratio'] = r['reference_peak'] / max(r['peak_rss'], 1)
        results['part_b'].append(r)
        print(f'(b) {case}: {r["n_images"]} images, {r["dim"]}-d at {r["image_size"]} px; '
              f'reference peak by formula {r["reference_peak"] / GB:.1f} GB; ours MEASURED '
              f'{r["peak_rss"] / GB:.2f} GB peak RSS (memory_report '
              f'{r["formula_ours_peak"] / GB:.2f} GB + ensemble with grads and Adam '
              f'{r["model_and_adam"] / GB:.2f} GB), store on disk {r["store_disk"] / GB:.2f} GB '
              f'-> ratio {r["ratio"]:.1f}x (target >= 20x); writing {r["write_seconds"]:.1f} s, '
              f'{r["model_iterations"] // NUM_MODELS} ensemble iterations '
              f'{r["train_seconds"] * NUM_MODELS / max(r["model_iterations"], 1):.2f} s each')
    if args.out:
        from common.io.atomic import atomic_write_text
        atomic_write_text(args.out, json.dumps(results, indent=1) + '\n')
    return results


if __name__ == '__main__':
    main()
