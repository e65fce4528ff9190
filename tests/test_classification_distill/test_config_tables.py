"""Every experiment config of classification_distill/configs/ (``_base_`` excepted): it loads, its
distillation pairs name layers its teacher records, and a fine-tune starts from the distilled
student with the backbone that student was distilled into.

Configs are read without importing their ``custom_imports`` (only the file tree is checked here;
building the models is the job of the model tests), so the whole file runs in a few seconds.
"""
import functools
import glob
import importlib.util
import os.path as osp

import pytest
from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_ROOT = osp.join(REPO, 'classification_distill', 'configs')
CONFIGS = sorted(
    osp.relpath(p, CONFIG_ROOT)
    for p in glob.glob(osp.join(CONFIG_ROOT, '**', '*.py'), recursive=True)
    if '_base_' not in osp.relpath(p, CONFIG_ROOT).split(osp.sep))
STUDENT_PREFIX = 'student.backbone.'


@functools.lru_cache(maxsize=None)
def load(rel):
    return Config.fromfile(osp.join(CONFIG_ROOT, rel), import_custom_modules=False)


def module_exists(name):
    """Whether ``name`` can be imported, found without importing it (nor its parents)."""
    top, *rest = name.split('.')
    spec = importlib.util.find_spec(top)
    if spec is None:
        return False
    locations = list(spec.submodule_search_locations or [])
    for i, part in enumerate(rest):
        last = i == len(rest) - 1
        if last and any(osp.isfile(osp.join(base, part + '.py')) for base in locations):
            return True
        locations = [osp.join(base, part) for base in locations if osp.isdir(osp.join(base, part))]
        if not locations:
            return False
    return True


def stem(rel):
    return osp.splitext(osp.basename(rel))[0]


# The tables are chosen by file name (the experiment naming convention), never by loading: a config
# that fails to load must fail its own tests, not silently drop out of the tables.
DISTILLATION_ALGORITHMS = ('repfusion', 'kd', 'fitnet', 'at', 'rkd')


def is_distillation(rel):
    """``{algorithm}_...`` with a distillation algorithm (``repfusion-fixed-t100_...``)."""
    return stem(rel).split('_')[0].split('-')[0] in DISTILLATION_ALGORITHMS


def is_finetune(rel):
    """A fine-tuning config that starts from a distilled student (``..._from-repfusion``)."""
    return stem(rel).endswith('_from-repfusion') or '_from-repfusion_' in stem(rel)


def dataset_key(cfg):
    dataset = cfg.train_dataloader.dataset
    return dataset.get('type'), osp.normpath(dataset.get('data_root', ''))


def student_backbone(cfg):
    backbone = cfg.model.student.backbone
    return backbone.type, backbone.get('depth')


DISTILLATION = [rel for rel in CONFIGS if is_distillation(rel)]
FINETUNE = [rel for rel in CONFIGS if is_finetune(rel)]


def test_the_tables_are_found():
    assert len(CONFIGS) >= 10
    assert {'repfusion_tinyimagenet', 'repfusion_imagenet', 'finetune_tinyimagenet'} <= {
        rel.split(osp.sep)[0] for rel in CONFIGS}
    assert any('tinyimagenet' in rel for rel in DISTILLATION)
    assert any('tinyimagenet' in rel for rel in FINETUNE)


@pytest.mark.parametrize('rel', CONFIGS)
def test_config_loads(rel):
    cfg = load(rel)
    assert cfg.get('model') and cfg.model.get('type'), f'{rel} defines no model'
    for module in cfg.get('custom_imports', {}).get('imports', []):
        assert module_exists(module), f'{rel}: custom_imports names {module!r}, not found'


@pytest.mark.parametrize('rel', CONFIGS)
def test_name_says_whether_it_distils(rel):
    """A load error fails here (and in test_config_loads) instead of hiding the config."""
    model = load(rel).model
    assert (model.type == 'FeatureDistiller') == is_distillation(rel), (
        f'{rel}: model type {model.type!r}, but its name says it is '
        f'{"" if is_distillation(rel) else "not "}a distillation')
    if is_finetune(rel):
        assert model.get('backbone', {}).get('init_cfg') is not None, (
            f'{rel} is named _from-repfusion but does not initialise its backbone')


@pytest.mark.parametrize('rel', DISTILLATION)
def test_distillation_pairs_use_recorded_teacher_layers(rel):
    model = load(rel).model
    layers = list(model.teacher.get('layers', []))
    assert model.distill_pairs, f'{rel} has no distill_pairs'
    for name, pair in model.distill_pairs.items():
        assert pair.teacher in layers, (f'{rel}: pair {name!r} reads teacher layer '
                                        f'{pair.teacher!r}, the teacher records {layers}')


@pytest.mark.parametrize('rel', FINETUNE)
def test_finetune_loads_the_distilled_student_backbone(rel):
    cfg = load(rel)
    backbone = cfg.model.backbone
    init = backbone.init_cfg
    assert init.type == 'Pretrained' and init.prefix == STUDENT_PREFIX, init
    # The distillation config the checkpoint comes from (named in its work_dirs path), or else
    # every distillation config of the same dataset.
    named = [d for d in DISTILLATION if f'/{stem(d)}/' in f'/{init.checkpoint}']
    paired = named or [d for d in DISTILLATION if dataset_key(load(d)) == dataset_key(cfg)]
    assert paired, f'{rel}: no distillation config trains on {dataset_key(cfg)}'
    students = {student_backbone(load(d)) for d in paired}
    assert (backbone.type, backbone.get('depth')) in students, (
        f'{rel} fine-tunes a {backbone.type}-{backbone.get("depth")}, but the student distilled '
        f'by {[stem(d) for d in paired]} is {sorted(students)}: its weights would not load')


@pytest.mark.parametrize('rel', [r for r in CONFIGS if r.startswith('finetune_')])
def test_finetune_folder_backbone_matches_its_distillation(rel):
    """Scratch baselines too: they must train the backbone the distilled rows start from."""
    cfg = load(rel)
    paired = [d for d in DISTILLATION if dataset_key(load(d)) == dataset_key(cfg)]
    assert paired, f'{rel}: no distillation config trains on {dataset_key(cfg)}'
    students = {student_backbone(load(d)) for d in paired}
    assert (cfg.model.backbone.type, cfg.model.backbone.get('depth')) in students
