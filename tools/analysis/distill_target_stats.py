r"""How much of a distillation target varies from image to image, and how well a student fits it.

    python tools/analysis/distill_target_stats.py CONFIG [CHECKPOINT] [--split test|train]
        [--data-config CFG] [--pair NAME ...] [--timestep T ...] [--noise-draws 4]
        [--batch-size 64] [--num-images N] [--seed 0] [--student-mode eval|train]
        [--cfg-options k=v ...] [--out FILE.json]

CONFIG is a ``FeatureDistiller`` config (any teacher, student and sampler). For each distill pair
(or each ``--pair``) and each reported timestep, the pooled teacher target ``T`` [N, C] (the
teacher feature of the pair, globally average-pooled, over the N images of the split) is
summarised as

    mean_square    E[T^2] over images and channels
    image_var      the image-dependent part: variance over images, averaged over channels
                   (population variance, so mean_square = image_var + constant exactly)
    constant       the part shared by every image: squared mean over images, averaged over channels
    image_share    image_var / mean_square
    noise_var      the forward-noise part: variance over --noise-draws teacher runs of the same
                   image (unbiased, averaged over images and channels); part of image_var

With a CHECKPOINT (student and connectors of a distillation run; the policy too, see below) the
student's prediction ``P`` is what the pair's loss sees: the student's output at the pair's module,
through the pair's connector (and the bilinear alignment when the sizes differ), pooled. Reported:

    mse            MSE(P, T)
    mse_mean       MSE of predicting the dataset mean of T for every image (= image_var)
    r2             1 - mse / mse_mean (below 0: worse than the constant prediction)
    standardised   the same against T standardised per channel over the split
                   (``standardize_per_channel``, what ``target_norm='batch'`` trains on, with the
                   whole split as the batch)

The pair's ``target_norm`` says which of the two rows the checkpoint was trained on.

Choices a reader must know:
* Images come from ``{split}_dataloader.dataset`` of --data-config (default: CONFIG), read in
  order with the dataset's own pipeline (the train split keeps its augmentation, seeded by
  --seed: what the loss sees), and are preprocessed by CONFIG's ``data_preprocessor`` (the one the
  student was trained with and the teacher's ``input_norm`` is taken from). A config without that
  dataloader is refused rather than replaced: the digits demo's distillation configs set
  ``test_dataloader=None``, so for the test digits pass the fine-tuning config of the same data
  (the same 600 held-out digits, preprocessed identically) with ``--data-config
  classification_distill/configs/demo_digits/resnet18-w16_1xb32-100e_digits-10shot_scratch.py``.
* ``T`` is one teacher run as configured: a teacher with a ``seed`` uses it; one with
  ``seed=None`` draws its noise from torch's generator, seeded from --seed per batch. The noise
  draws re-run the teacher with ``seed + k`` (seeded teachers) or fresh generator seeds; draw 0 is
  ``T`` itself. ``noise='none'`` and classifier teachers add no noise: noise_var is 0 without
  re-running them. With ``ensemble`` > 1, every draw is the teacher's average over its members.
* Timesteps: ``--timestep`` when given (one section per value); else a ``FixedTimestep``'s own;
  a ``ReinforceTimestepPolicy`` reports at its most likely action (the action with the highest
  policy probability averaged over the split, mapped to its timestep; the checkpoint must hold
  the policy, which checkpoints of this toolkit always do); any other sampler needs --timestep.
* The student runs in eval mode (BatchNorm running statistics) unless --student-mode train
  (batch statistics, as during distillation; then the numbers depend on --batch-size).

The digits demo (classification_distill/README.md, "What we found"): the raw-target student of
``tools/demo_repfusion.py --faithful-target`` on the 600 test digits, from the repository root::

    C=classification_distill/configs/demo_digits
    python tools/analysis/distill_target_stats.py \
        $C/repfusion-fixed-t100_resnet18-w16_1xb64-20e_digits.py \
        work_dirs/demo/repfusion_fixed_t_raw_target/epoch_20.pth \
        --data-config $C/resnet18-w16_1xb32-100e_digits-10shot_scratch.py \
        --cfg-options model.distill_pairs.feat.loss.target_norm=None
"""
import json
import math
import os.path as osp
import sys

_TOOLS = osp.dirname(osp.dirname(osp.abspath(__file__)))
if _TOOLS not in sys.path:  # run as a script: first; imported (tests): last, shadowing nothing
    sys.path.insert(0 if __name__ == '__main__' else len(sys.path), _TOOLS)
import _cli  # noqa: E402

_cli.make_repo_importable()

PROG = 'tools/analysis/distill_target_stats.py'
FINETUNE_DIGITS = ('classification_distill/configs/demo_digits/'
                   'resnet18-w16_1xb32-100e_digits-10shot_scratch.py')


def parse_args(argv=None):
    parser = _cli.ArgumentParser(
        prog=PROG, description=__doc__.split('\n\n')[0],
        epilog='See the module docstring (the top of this file) for the exact definitions.')
    parser.add_argument('config', help='FeatureDistiller config')
    parser.add_argument('checkpoint', nargs='?',
                        help='distillation checkpoint (student + connectors); without it only the '
                        'target statistics are computed')
    parser.add_argument('--split', choices=['test', 'train'], default='test',
                        help='which dataloader of the data config supplies the images '
                        '(default: test)')
    parser.add_argument('--data-config',
                        help='config whose {split}_dataloader.dataset supplies the images '
                        '(default: CONFIG; the digits demo\'s distillation configs have no test '
                        f'dataloader: use {FINETUNE_DIGITS})')
    parser.add_argument('--pair', action='append', metavar='NAME',
                        help='distill pair to report (repeatable; default: all)')
    parser.add_argument('--timestep', type=int, nargs='+', metavar='T',
                        help='teacher timestep(s) to report (default: FixedTimestep\'s own, the '
                        'policy\'s most likely action; required for other samplers)')
    parser.add_argument('--noise-draws', type=int, default=4, metavar='K',
                        help='teacher runs per image for the forward-noise variance (default 4; '
                        '0 or 1: not measured)')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--num-images', type=int, metavar='N',
                        help='use only the first N images of the split')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the teacher noise (seed=None teachers), of the data '
                        'augmentation and of the student\'s init before loading (default 0)')
    parser.add_argument('--student-mode', choices=['eval', 'train'], default='eval',
                        help='BatchNorm of the student: running statistics (eval, default) or '
                        'batch statistics (train)')
    parser.add_argument('--device', help='cpu or cuda (default: cuda when available)')
    parser.add_argument('--out', metavar='FILE.json', help='also write the statistics here')
    _cli.add_cfg_options_arg(parser)
    args = parser.parse_args(argv)
    _cli.check_at_least_one(parser, args, ('batch_size', 'num_images'))
    if args.noise_draws < 0:
        parser.error(f'--noise-draws must be 0 or more, got {args.noise_draws}')
    return args


# ---------------------------------------------------------------------------- config checks
def _is_feature_distiller(cls):
    # by name along the MRO: the class moved from classification_distill to common.distill
    return cls is not None and any(k.__name__ == 'FeatureDistiller' for k in cls.__mro__)


def check_distiller_config(cfg, path):
    """The config's model must build a FeatureDistiller; return its distill_pairs dict."""
    from mmengine.registry import MODELS
    model = cfg.get('model') or {}
    type_ = model.get('type')
    try:
        cls = _cli.resolve_type(MODELS, type_, cfg.get('default_scope'))
    except KeyError:
        cls = None
    if not _is_feature_distiller(cls if isinstance(cls, type) else None):
        raise _cli.UsageError(
            f'Config {path!r} builds the model type {type_!r}, not a FeatureDistiller: this tool '
            f'measures the teacher targets of a distillation and how a distilled student fits '
            f'them. Pass the distillation config the checkpoint was trained with (e.g. '
            f'classification_distill/configs/demo_digits/'
            f'repfusion-fixed-t100_resnet18-w16_1xb64-20e_digits.py); to take the images from '
            f'another config (a fine-tuning config of the same data), name that one with '
            f'--data-config.')
    return model.get('distill_pairs') or {}


def select_pairs(pairs, wanted):
    if not wanted:
        return list(pairs)
    unknown = [p for p in wanted if p not in pairs]
    if unknown:
        raise _cli.UsageError(
            f'--pair {", ".join(unknown)}: the config has no such distill pair; its pairs are '
            f'{", ".join(pairs) or "(none)"} (the keys of model.distill_pairs).')
    return list(dict.fromkeys(wanted))


def dataset_cfg(data_cfg, split, path, is_default):
    loader = data_cfg.get(f'{split}_dataloader')
    if not loader or not loader.get('dataset'):
        hint = (' The digits demo\'s distillation configs set test_dataloader=None; for the test '
                f'digits pass --data-config {FINETUNE_DIGITS} (the same 600 held-out digits).'
                if is_default else '')
        raise _cli.UsageError(
            f'Config {path!r} has no {split}_dataloader with a dataset, so it cannot supply the '
            f'{split} images. Pass --data-config with a config that has one (a fine-tuning or '
            f'evaluation config of the same data), or choose the other --split.{hint}')
    return loader['dataset']


def load_state(path):
    """The checkpoint's state dict (safe loader); a missing file is a RunError (exit 1)."""
    _cli.check_local_file(path, 'Checkpoint')
    from common.io import load_checkpoint, state_dict_from_checkpoint
    return state_dict_from_checkpoint(load_checkpoint(path, map_location='cpu'))


def load_into(model, state, path):
    """Load student, connectors (and sampler) weights; refuse a checkpoint of another model."""
    from common.io.pretrained_init import load_state_dict_report
    report = load_state_dict_report(model, state, source=path)
    needed = [k for k in report['missing'] if k.startswith(('student.', 'connectors.'))]
    if needed or report['unexpected'] or report['mismatched']:
        raise _cli.RunError(
            f'Checkpoint {path!r} does not fit the config\'s distiller: '
            f'{len(needed)} student/connector weights missing (e.g. {needed[:3]}), '
            f'{len(report["unexpected"])} unexpected (e.g. {report["unexpected"][:3]}), '
            f'{len(report["mismatched"])} of another shape (e.g. {report["mismatched"][:3]}). '
            f'Use the distillation config the checkpoint was trained with (and the same '
            f'--cfg-options).')
    return report


# ---------------------------------------------------------------------------- data
def iterate_batches(model, dataset, num, batch_size, seed):
    """(batch index, inputs, data_samples) after the distiller's data preprocessor, in order."""
    import random

    import numpy as np
    import torch
    from mmengine.dataset import pseudo_collate
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    for b, start in enumerate(range(0, num, batch_size)):
        batch = pseudo_collate([dataset[i] for i in range(start, min(start + batch_size, num))])
        with torch.no_grad():
            data = model.data_preprocessor(batch, False)
        yield b, data['inputs'].float(), data.get('data_samples')


# ---------------------------------------------------------------------------- timesteps
def _is_policy(sampler):
    return callable(getattr(sampler, 'distribution', None)) and callable(
        getattr(sampler, 'action_to_timestep', None))


def choose_timesteps(model, args, has_policy_state, batches):
    """The timesteps to report and how they were chosen; ``[None]`` for a classifier teacher."""
    import torch
    sampler = model.timestep_sampler
    teacher = model.teacher
    if not hasattr(teacher, 'noise_scheduler'):
        return [None], dict(source='classifier teacher (no timestep)')
    num = int(teacher.num_train_timesteps)
    if args.timestep:
        bad = [t for t in args.timestep if not 0 <= t < num]
        if bad:
            raise _cli.UsageError(f'--timestep {bad}: the teacher has timesteps 0..{num - 1}.')
        return list(dict.fromkeys(args.timestep)), dict(source='--timestep')
    name = type(sampler).__name__
    if hasattr(sampler, 'timestep') and not sampler.learns:
        return [int(sampler.timestep)], dict(source=name)
    if _is_policy(sampler):
        if not has_policy_state:
            raise _cli.UsageError(
                f'The config\'s timestep sampler is {name}: which timestep it uses depends on '
                f'its trained policy, and no checkpoint with the policy (timestep_sampler.* '
                f'weights) was given. Pass the policy run\'s checkpoint, or name the timestep(s) '
                f'to report with --timestep T [T ...].')
        sampler.eval()
        total, count = None, 0
        with torch.no_grad():
            for _, inputs, _ in batches():
                probs = sampler.distribution(inputs).probs.sum(0)
                total = probs if total is None else total + probs
                count += len(inputs)
        mean = (total / count).cpu()
        action = int(mean.argmax())
        timesteps = sampler.action_to_timestep(torch.arange(len(mean))).tolist()
        t = int(timesteps[action])
        return [t], dict(source=f'{name}: most likely action', action=action,
                         action_probability=float(mean[action]),
                         mean_action_probabilities=[float(p) for p in mean],
                         action_timesteps=[int(x) for x in timesteps])
    raise _cli.UsageError(
        f'The config\'s timestep sampler is {name}, which draws a different timestep for every '
        f'image; name the timestep(s) to report with --timestep T [T ...].')


# ---------------------------------------------------------------------------- the teacher
class TeacherRunner:
    """Teacher features of a batch at one timestep, for noise draw ``k`` (0 = the target T)."""

    def __init__(self, model, seed):
        self.model = model
        self.teacher = model.teacher
        self.seed = seed
        self.teacher_seed = getattr(self.teacher, 'seed', None)
        self.has_noise = (hasattr(self.teacher, 'noise_scheduler')
                          and getattr(self.teacher, 'noise', 'none') != 'none')

    def class_labels(self, inputs, data_samples):
        model = self.model
        if not getattr(model, 'teacher_class_labels', False):
            return None
        return model._teacher_labels(model._labels(data_samples, inputs.device))

    def __call__(self, inputs, data_samples, t, k, batch_index):
        import torch
        labels = self.class_labels(inputs, data_samples)
        if t is None:  # a classifier teacher: deterministic
            return self.teacher.features_at(inputs, None, class_labels=labels)
        if self.teacher_seed is not None:
            self.teacher.seed = int(self.teacher_seed) + k
        else:  # the teacher draws from torch's global generator: seed it per batch and draw
            torch.manual_seed(_draw_seed(self.seed, k, batch_index, t))
        try:
            timesteps = torch.full((len(inputs), ), int(t), dtype=torch.long)
            # extract_at: never reads or writes the teacher's feature cache
            return self.teacher.extract_at(inputs, timesteps, class_labels=labels)
        finally:
            if self.teacher_seed is not None:
                self.teacher.seed = self.teacher_seed


def _draw_seed(seed, k, batch_index, t):
    return (int(seed) * 1_000_003 + k * 10_007 + batch_index * 101 + int(t)) % (2**63 - 1)


# ---------------------------------------------------------------------------- statistics
def target_stats(T, draws=None, noiseless=False):
    """Statistics of the pooled target ``T`` [N, C] (float64 numpy).

    ``draws`` [N, K, C] (K >= 2) are teacher runs of the same images with different noise;
    ``noiseless``: the teacher adds no noise, so the noise part is 0 without measuring it.
    """
    mean_square = float((T**2).mean())
    image_var = float(T.var(axis=0).mean())
    constant = float((T.mean(axis=0)**2).mean())
    out = dict(mean_square=mean_square, image_var=image_var, constant=constant,
               image_share=image_var / mean_square if mean_square else math.nan)
    if draws is not None and draws.shape[1] >= 2:
        noise_var = float(draws.var(axis=1, ddof=1).mean())
        out.update(noise_var=noise_var,
                   noise_share_of_image_var=noise_var / image_var if image_var else math.nan)
    elif noiseless:
        out.update(noise_var=0.0, noise_share_of_image_var=0.0)
    else:  # not measured (--noise-draws below 2)
        out.update(noise_var=None, noise_share_of_image_var=None)
    return out


def fit_stats(P, T):
    """``mse``, ``mse_mean`` (predicting T's dataset mean) and ``r2`` of a prediction P of T."""
    mse = float(((P - T)**2).mean())
    mse_mean = float(T.var(axis=0).mean())
    return dict(mse=mse, mse_mean=mse_mean,
                r2=1.0 - mse / mse_mean if mse_mean > 0 else math.nan)


def standardise(T):
    """T standardised per channel over the images, exactly as ``target_norm='batch'`` does."""
    import torch

    from common.distill.losses import standardize_per_channel
    return standardize_per_channel(torch.from_numpy(T)).numpy()


# ---------------------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(argv)
    cfg = _cli.load_config(args.config, args.cfg_options)  # imports common, custom_imports
    pairs_cfg = check_distiller_config(cfg, args.config)
    pair_names = select_pairs(pairs_cfg, args.pair)
    data_path = args.data_config or args.config
    data_cfg = _cli.load_config(args.data_config) if args.data_config else cfg
    ds_cfg = dataset_cfg(data_cfg, args.split, data_path, args.data_config is None)
    state = load_state(args.checkpoint) if args.checkpoint else None

    import copy

    import torch
    from mmengine.registry import DATASETS, MODELS

    from common.distill.connectors import align_spatial
    from common.feature_hooks import FeatureRecorder, resolve_modules
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))

    torch.manual_seed(args.seed)
    with _cli.config_scope(cfg):
        model = MODELS.build(copy.deepcopy(cfg.model))
    if state is not None:
        load_into(model, state, args.checkpoint)
    model.to(device).eval()
    model.student.train(args.student_mode == 'train')
    with _cli.config_scope(data_cfg):
        dataset = DATASETS.build(copy.deepcopy(ds_cfg))
    num = len(dataset) if args.num_images is None else min(args.num_images, len(dataset))
    if num == 0:
        raise _cli.RunError(f'The {args.split} dataset of {data_path!r} is empty.')

    def batches():
        for b, inputs, samples in iterate_batches(model, dataset, num, args.batch_size,
                                                  args.seed):
            yield b, inputs.to(device), samples

    has_policy_state = state is not None and any(
        k.startswith('timestep_sampler.') for k in state)
    timesteps, timestep_info = choose_timesteps(model, args, has_policy_state, batches)

    runner = TeacherRunner(model, args.seed)
    draws_n = max(1, args.noise_draws) if runner.has_noise else 1
    pairs = {name: model.pairs[name] for name in pair_names}
    student_modules = resolve_modules(model.student, sorted({p['student'] for p in pairs.values()}),
                                      what='student', how_to_list='`print(model.student)`')
    # per pair: per timestep a list of [B, K, C] draws; predictions [B, C]
    draws = {n: {t: [] for t in timesteps} for n in pairs}
    preds = {n: [] for n in pairs}
    with torch.no_grad():
        for b, inputs, samples in batches():
            per_t = {}
            for t in timesteps:
                runs = [runner(inputs, samples, t, k, b) for k in range(draws_n)]
                per_t[t] = runs
                for name, pair in pairs.items():
                    pooled = [_global_pool(r[pair['teacher']]) for r in runs]
                    draws[name][t].append(torch.stack(pooled, 1).double().cpu())
            if state is None:
                continue
            with FeatureRecorder(student_modules, early_exit=False, keep='last') as rec:
                student = model.student
                run = (student.extract_feat if callable(getattr(student, 'extract_feat', None))
                       else student)
                feats = rec.run(lambda: run(inputs))
            for name, pair in pairs.items():
                s = model.connectors[name](feats[pair['student']])
                t_map = per_t[timesteps[0]][0][pair['teacher']]
                align = pair.get('align', 'bilinear')
                if align and s.dim() == 4 and s.shape[-2:] != t_map.shape[-2:]:
                    s = align_spatial(s, t_map, mode=align)
                preds[name].append(_global_pool(s).double().cpu())

    report = dict(
        config=args.config, checkpoint=args.checkpoint, data_config=data_path, split=args.split,
        num_images=num, noise_draws=draws_n if draws_n >= 2 else 0, seed=args.seed,
        student_mode=args.student_mode if state is not None else None,
        teacher=dict(type=type(model.teacher).__name__,
                     noise=getattr(model.teacher, 'noise', None),
                     seed=runner.teacher_seed, ensemble=getattr(model.teacher, 'ensemble', None)),
        timesteps=dict(timestep_info, reported=timesteps), pairs={})
    for name, pair in pairs.items():
        loss_cfg = pairs_cfg[name].get('loss') or {}
        entry = dict(student=pair['student'], teacher=pair['teacher'],
                     loss=loss_cfg.get('type'), target_norm=loss_cfg.get('target_norm'),
                     timesteps={})
        P = torch.cat(preds[name]).numpy() if state is not None else None
        for t in timesteps:
            D = torch.cat(draws[name][t]).numpy()  # [N, K, C]
            T = D[:, 0]
            stats = target_stats(T, D if D.shape[1] >= 2 else None,
                                 noiseless=not runner.has_noise)
            stats['channels'] = int(T.shape[1])
            if P is not None:
                stats['student'] = dict(fit_stats(P, T), standardised=fit_stats(P, standardise(T)))
            entry['timesteps'][str(t)] = stats
        report['pairs'][name] = entry

    print_table(report)
    if args.out:
        from common.io import atomic_write_bytes
        atomic_write_bytes(args.out, json.dumps(report, indent=2).encode() + b'\n')
        print(f'written: {args.out}')
    return report


def _global_pool(x):
    return x.mean(dim=(2, 3)) if x.dim() == 4 else x.flatten(1)


def _g(x, digits=4):
    if x is None:
        return '—'
    if isinstance(x, float) and math.isnan(x):
        return 'nan'
    return f'{x:.{digits}g}'


def print_table(report):
    teacher = report['teacher']
    print(f'{report["num_images"]} {report["split"]} images of {report["data_config"]}; '
          f'teacher {teacher["type"]} (noise={teacher["noise"]!r}, seed={teacher["seed"]}); '
          f'timesteps: {report["timesteps"]["source"]}')
    for name, entry in report['pairs'].items():
        for t, s in entry['timesteps'].items():
            at = '' if t == 'None' else f' at t={t}'
            print(f'\npair {name}: {entry["student"]} -> {entry["teacher"]}{at} '
                  f'(pooled, {s["channels"]} channels; loss {entry["loss"]}, '
                  f'target_norm={entry["target_norm"]!r})')
            rows = [
                ('mean square E[T^2]', _g(s['mean_square']), ''),
                ('image-dependent (var over images)', _g(s['image_var']),
                 f'{100 * s["image_share"]:.1f}% of the mean square'),
                ('constant (squared mean over images)', _g(s['constant']),
                 f'{100 * (1 - s["image_share"]):.1f}%'),
                (f'forward noise (var over {report["noise_draws"]} draws)'
                 if report['noise_draws'] else 'forward noise',
                 _g(s['noise_var']) if s['noise_var'] is not None else 'not measured',
                 '' if not s['noise_share_of_image_var'] else
                 f'{100 * s["noise_share_of_image_var"]:.1f}% of the image-dependent part'),
            ]
            st = s.get('student')
            if st:
                sd = st['standardised']
                rows += [
                    ('student MSE(P, T)', _g(st['mse']), ''),
                    ('dataset-mean MSE', _g(st['mse_mean']), ''),
                    ('R^2 = 1 - MSE / dataset-mean MSE', f'{st["r2"]:.3f}', ''),
                    ('standardised T: student MSE', _g(sd['mse']), ''),
                    ('standardised T: dataset-mean MSE', _g(sd['mse_mean']), ''),
                    ('standardised T: R^2', f'{sd["r2"]:.3f}', ''),
                ]
            for label, value, note in rows:
                print(f'  {label:<42} {value:>10}  {note}'.rstrip())


def cli(argv=None):
    return _cli.run_cli(PROG, main, argv)


if __name__ == '__main__':
    sys.exit(cli())
