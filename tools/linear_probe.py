"""Linear-probe accuracy of frozen features: pixels, a diffusion teacher's layer, a backbone.

    python tools/linear_probe.py CONFIG --features SPEC [SPEC ...] [--out probe.json]

CONFIG supplies the data (``train_dataloader`` / ``test_dataloader`` datasets; the train set is
read with the test pipeline, so without augmentation), the ``data_preprocessor`` and, for
backbone features, the backbone (``model.backbone`` or, in a distillation config,
``model.student.backbone``). Each SPEC is one of:

    pixels                             the preprocessed images, flattened
    teacher:PIPELINE_DIR:LAYER@T       a DiffusionTeacher feature (noise='forward', seed 0)
    backbone:CHECKPOINT                the backbone's last output, loaded from a classifier or a
                                       distillation checkpoint (prefix found automatically)
    backbone:random                    the same backbone as a from-scratch run starts it
                                       (``init_weights()``, seeded by --seed)

Feature maps are globally average-pooled to one vector per image. A logistic regression
(scikit-learn, features standardised on the train set) is fitted on the train split and scored
on the test split; the table gives test top-1 in percent. The probe asks how linearly separable
the classes are in a feature, independently of fine-tuning. classification_distill/README.md uses
it to explain the digits demo.

The arguments are parsed before torch, mmengine or ``common`` is imported.
"""
import json
import logging
import os.path as osp
import sys

if osp.dirname(osp.abspath(__file__)) not in sys.path:  # imported, not run as a script
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import _cli  # noqa: E402

_cli.make_repo_importable()

PROG = 'tools/linear_probe.py'
BACKBONE_PREFIXES = ('student.backbone.', 'backbone.')


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='config with the datasets (and backbone) to probe')
    parser.add_argument('--features', nargs='+', required=True, metavar='SPEC',
                        help="'pixels', 'teacher:DIR:LAYER@T', 'backbone:CKPT' or "
                        "'backbone:random'")
    parser.add_argument('--out', help='write the accuracies to this .json file')
    parser.add_argument('--batch-size', type=int, default=100)
    parser.add_argument('--C', type=float, default=1.0,
                        help='inverse L2 strength of the logistic regression (default 1.0)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the backbone init')
    _cli.add_cfg_options_arg(parser, help='override config settings (same rules as '
                             'tools/train.py: every KEY must exist, "+KEY" adds one)')
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------- data
def _dataset_cfg(cfg, split):
    loader = cfg.get(f'{split}_dataloader')
    if not loader or 'dataset' not in loader:
        raise _cli.UsageError(
            f'The config has no {split}_dataloader.dataset; the probe fits on the train split and '
            'scores on the test split of one config. Use a classification config that has both '
            '(e.g. the fine-tuning config of the same data).')
    return loader['dataset']


def load_split(cfg, split, batch_size):
    """(inputs [N, C, H, W] after the data preprocessor, labels [N]) of one split."""
    import copy

    import torch
    from mmengine.dataset import pseudo_collate
    from mmpretrain.registry import DATASETS, MODELS
    ds_cfg = copy.deepcopy(_dataset_cfg(cfg, split))
    if split == 'train':  # no augmentation: the test pipeline
        ds_cfg['pipeline'] = copy.deepcopy(_dataset_cfg(cfg, 'test')['pipeline'])
    with _cli.config_scope(cfg, default='mmpretrain'):
        dataset = DATASETS.build(ds_cfg)
        preprocessor = MODELS.build(cfg.model['data_preprocessor'])
    inputs, labels = [], []
    for start in range(0, len(dataset), batch_size):
        batch = pseudo_collate([dataset[i] for i in range(start, min(start + batch_size,
                                                                     len(dataset)))])
        data = preprocessor(batch, False)
        inputs.append(data['inputs'].float())
        labels.extend(int(s.gt_label[0]) for s in data['data_samples'])
    return torch.cat(inputs), torch.tensor(labels)


# ---------------------------------------------------------------------------- features
def _pool(x):
    return x.mean(dim=(2, 3)) if x.dim() == 4 else x.flatten(1)


def _backbone_cfg(cfg):
    model = cfg.model
    if 'backbone' in model:
        return model['backbone']
    if 'student' in model and 'backbone' in model['student']:
        return model['student']['backbone']
    raise _cli.UsageError('backbone features need model.backbone (or model.student.backbone) '
                          'in the config.')


def load_backbone(cfg, source, seed):
    import copy

    import torch
    from mmpretrain.registry import MODELS

    from common.io import load_checkpoint
    bb_cfg = copy.deepcopy(_backbone_cfg(cfg))
    bb_cfg.pop('init_cfg', None)
    torch.manual_seed(seed)
    with _cli.config_scope(cfg, default='mmpretrain'):
        backbone = MODELS.build(bb_cfg)
    backbone.eval()  # (mmpretrain's ResNet.train() returns None, so no chaining)
    if source == 'random':  # the initialisation a from-scratch run starts from
        from mmengine.logging import MMLogger
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)  # init_weights logs every parameter at INFO
        try:
            backbone.init_weights()
        finally:
            logger.setLevel(level)
        return backbone
    _cli.check_local_file(source, 'Checkpoint')
    state = load_checkpoint(source, map_location='cpu')
    state = state.get('state_dict', state)
    for prefix in BACKBONE_PREFIXES:
        weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if weights:
            break
    else:
        roots = sorted({k.split('.')[0] for k in state})
        raise _cli.RunError(
            f'Checkpoint {source!r} holds no backbone weights: no key starts with '
            f'{" or ".join(BACKBONE_PREFIXES)} (its top-level names: {", ".join(roots[:8])}). '
            'Pass a classifier or a distillation checkpoint of this toolkit.')
    from common.io.pretrained_init import load_state_dict_report
    report = load_state_dict_report(backbone, weights, source=source)
    if report['missing'] or report['unexpected'] or report['mismatched']:
        raise _cli.RunError(
            f'Checkpoint {source!r} does not fit the config\'s backbone: '
            f'{len(report["missing"])} missing keys (e.g. {report["missing"][:3]}), '
            f'{len(report["unexpected"])} unexpected (e.g. {report["unexpected"][:3]}), '
            f'{len(report["mismatched"])} of another shape (e.g. {report["mismatched"][:3]}). '
            'Use the config the checkpoint was trained with.')
    return backbone


def parse_teacher_spec(spec):
    """'teacher:DIR:LAYER@T' → (DIR, LAYER, T)."""
    body = spec[len('teacher:'):]
    folder, sep, layer_t = body.rpartition(':')
    layer, sep2, t = layer_t.rpartition('@')
    if not (sep and sep2 and folder and layer and t.isdigit()):
        raise _cli.UsageError(
            f'Feature spec {spec!r} is not of the form teacher:PIPELINE_DIR:LAYER@T, e.g. '
            'teacher:work_dirs/demo/teacher/pipeline:mid_block.resnets.1.conv2@100.')
    return folder, layer, int(t)


def make_extractor(cfg, spec, seed):
    """A function inputs [B, C, H, W] → features [B, D] for one SPEC."""
    import torch
    if spec == 'pixels':
        return lambda x: x.flatten(1)
    if spec.startswith('teacher:'):
        from common.teachers import DiffusionTeacher
        folder, layer, t = parse_teacher_spec(spec)
        pre = cfg.model['data_preprocessor']
        teacher = DiffusionTeacher(pretrained=folder, layers=[layer], timesteps=[t],
                                   noise='forward', seed=0,
                                   input_norm=dict(mean=list(pre['mean']), std=list(pre['std'])))
        return lambda x: _pool(teacher.extract_at(x, torch.full((len(x), ), t))[layer])
    if spec.startswith('backbone:'):
        backbone = load_backbone(cfg, spec[len('backbone:'):], seed)
        return lambda x: _pool(backbone(x)[-1])
    raise _cli.UsageError(f"Unknown feature spec {spec!r}: use 'pixels', "
                          "'teacher:PIPELINE_DIR:LAYER@T', 'backbone:CHECKPOINT' or "
                          "'backbone:random'.")


def extract(extractor, inputs, batch_size, desc):
    import torch
    from tqdm import tqdm
    with torch.no_grad():
        chunks = [extractor(inputs[i:i + batch_size])
                  for i in tqdm(range(0, len(inputs), batch_size), desc=desc, leave=False)]
    return torch.cat(chunks).numpy()


# ---------------------------------------------------------------------------- probe
def probe_accuracy(train_x, train_y, test_x, test_y, C=1.0):
    """Test top-1 (%) of a logistic regression fitted on standardised train features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(C=C, max_iter=5000).fit(scaler.transform(train_x), train_y)
    return 100.0 * float(clf.score(scaler.transform(test_x), test_y))


def main(argv=None):
    args = parse_args(argv)
    cfg = _cli.load_config(args.config, args.cfg_options)  # imports its custom_imports
    extractors = {spec: make_extractor(cfg, spec, args.seed) for spec in args.features}
    train_x, train_y = load_split(cfg, 'train', args.batch_size)
    test_x, test_y = load_split(cfg, 'test', args.batch_size)
    results = {}
    for spec, extractor in extractors.items():
        f_train = extract(extractor, train_x, args.batch_size, f'{spec} (train)')
        f_test = extract(extractor, test_x, args.batch_size, f'{spec} (test)')
        acc = probe_accuracy(f_train, train_y.numpy(), f_test, test_y.numpy(), C=args.C)
        results[spec] = dict(top1=acc, dim=int(f_train.shape[1]))
        print(f'{spec:<70} dim {f_train.shape[1]:>5}  top-1 {acc:6.2f}', flush=True)
    summary = dict(config=args.config, train_size=len(train_y), test_size=len(test_y),
                   C=args.C, features=results)
    if args.out:
        from common.io import atomic_write_bytes
        atomic_write_bytes(args.out, json.dumps(summary, indent=2).encode() + b'\n')
    return summary


def cli(argv=None):
    return _cli.run_cli(PROG, main, argv)


if __name__ == '__main__':
    sys.exit(cli())
