"""Start-up check: a teacher feature cache next to random data augmentation never hits.

The feature cache (``DiffusionTeacher(cache_dir=...)``) keys each entry by the exact input
tensor, so it only hits when the very same tensor comes again. With a random transform in the
training pipeline (a random crop, a flip, colour jitter, RandAugment, Mixup...) an image almost
never comes back identical: every step misses, the teacher runs as without a cache, and every
step writes new entries, so the disk fills.

The one rule: training scripts call :func:`warn_if_cache_never_hits` on the config at start-up,
before building the runner; the check reads the config only (nothing is built or imported).
A transform counts as random when its type is in :data:`RANDOM_TRANSFORMS`, starts with
``Random`` or ``Rand``, or has a ``prob`` strictly between 0 and 1.
"""
import logging
import re
import warnings

from mmengine.logging import print_log

from .errors import FeatureCacheNeverHitsWarning

# Transform types (mmpretrain, mmseg, mmpose, mmdet, torchvision wrappers) that draw random
# numbers each time they run, besides every type starting with 'Random' or 'Rand'.
RANDOM_TRANSFORMS = frozenset({
    'ColorJitter', 'RandAugment', 'AutoAugment', 'TrivialAugment', 'TrivialAugmentWide',
    'AugMix', 'Mixup', 'MixUp', 'CutMix', 'ResizeMix', 'RandomErasing', 'PhotoMetricDistortion',
    'GaussianBlur', 'Lighting', 'Albu', 'Albumentation', 'BEiTMaskGenerator',
    'SimMIMMaskGenerator', 'TopdownRandomAffine', 'YOLOXHSVRandomAug', 'Mosaic', 'CopyPaste',
})
# Keys under which configs nest transforms or datasets.
_NESTED_TRANSFORM_KEYS = ('transforms', 'policies', 'augments', 'batch_augments')
_NESTED_DATASET_KEYS = ('dataset', 'datasets')


def _get(obj, key, default=None):
    try:
        return obj.get(key, default)
    except AttributeError:
        return default


def _is_mapping(obj):
    return hasattr(obj, 'keys') and hasattr(obj, 'get')


def is_random_transform(transform):
    """Whether a transform config (a dict with ``type``) draws random numbers."""
    if not _is_mapping(transform):
        return False
    kind = transform.get('type')
    name = kind if isinstance(kind, str) else getattr(kind, '__name__', '')
    short = re.split(r'[./]', name)[-1]  # 'torchvision/RandomResizedCrop', 'mmpretrain.Mixup'
    if short in RANDOM_TRANSFORMS:
        return True
    if short.startswith(('Random', 'Rand')):
        return True
    prob = transform.get('prob')
    return isinstance(prob, (int, float)) and 0 < prob < 1


def teacher_caches(cfg):
    """``[(path, cache_dir)]`` of every dict under ``cfg.model`` with a ``cache_dir`` set."""
    found = []

    def walk(node, path):
        if _is_mapping(node):
            if node.get('cache_dir') is not None:
                found.append((path, node.get('cache_dir')))
            for key in node.keys():
                walk(node.get(key), f'{path}.{key}')
        elif isinstance(node, (list, tuple)):
            for i, item in enumerate(node):
                walk(item, f'{path}[{i}]')

    walk(_get(cfg, 'model'), 'model')
    return found


def _random_transforms(node, path, found):
    """Collect random transforms in a list of transform configs (and nested ones)."""
    if isinstance(node, (list, tuple)):
        for i, item in enumerate(node):
            _random_transforms(item, f'{path}[{i}]', found)
    elif _is_mapping(node):
        if is_random_transform(node):
            kind = node.get('type')
            found.append(f'{path}: {getattr(kind, "__name__", kind)}')
        for key in _NESTED_TRANSFORM_KEYS:
            if node.get(key) is not None:
                _random_transforms(node.get(key), f'{path}.{key}', found)


def _dataset_pipelines(node, path, found):
    if isinstance(node, (list, tuple)):
        for i, item in enumerate(node):
            _dataset_pipelines(item, f'{path}[{i}]', found)
    elif _is_mapping(node):
        if node.get('pipeline') is not None:
            _random_transforms(node.get('pipeline'), f'{path}.pipeline', found)
        for key in _NESTED_DATASET_KEYS:
            if node.get(key) is not None:
                _dataset_pipelines(node.get(key), f'{path}.{key}', found)


def random_training_transforms(cfg):
    """Where the training data is randomly transformed before the teacher sees it: the train
    dataloader's dataset pipelines (nested datasets and wrappers included) and the model's
    batch augmentations (``data_preprocessor.batch_augments``, ``train_cfg.augments``)."""
    found = []
    _dataset_pipelines(_get(_get(cfg, 'train_dataloader'), 'dataset'),
                       'train_dataloader.dataset', found)
    model = _get(cfg, 'model')
    preprocessor = _get(model, 'data_preprocessor')
    _random_transforms(_get(preprocessor, 'batch_augments'),
                       'model.data_preprocessor.batch_augments', found)
    _random_transforms(_get(_get(model, 'train_cfg'), 'augments'), 'model.train_cfg.augments',
                       found)
    return found


def random_augmentations_with_cache(cfg):
    """The random training transforms (``'path: Type'``) when a teacher cache is configured;
    ``[]`` when there is no cache or the training data is deterministic."""
    if not teacher_caches(cfg):
        return []
    return random_training_transforms(cfg)


def warn_if_cache_never_hits(cfg):
    """Log a WARNING and raise a :class:`FeatureCacheNeverHitsWarning` when a teacher cache is
    configured together with random training transforms. Returns the message (None if fine)."""
    transforms = random_augmentations_with_cache(cfg)
    if not transforms:
        return None
    caches = ', '.join(f'{path}.cache_dir={cache_dir!r}' for path, cache_dir in teacher_caches(cfg))
    message = (
        f'Teacher feature cache that will never hit: {caches} is set, but the training data is '
        f'randomly transformed ({"; ".join(transforms)}). The cache keys each entry by the exact '
        f'input tensor, so with random augmentation almost no input ever repeats: every step '
        f'misses, the teacher runs as if there were no cache, and every step writes new entries '
        f'until the disk is full. Remove cache_dir (e.g. --cfg-options '
        f'{teacher_caches(cfg)[0][0]}.cache_dir=None), or train on a deterministic pipeline '
        f'(no random transforms) if the teacher features are to be cached.')
    print_log(message, logger='current', level=logging.WARNING)
    warnings.warn(message, FeatureCacheNeverHitsWarning, stacklevel=2)
    return message
