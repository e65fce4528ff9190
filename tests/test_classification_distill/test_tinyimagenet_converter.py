"""tools/dataset_converters/tinyimagenet.py on a tiny fake release in the official layout."""
import importlib.util
import os
import os.path as osp
import sys

import numpy as np
import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY_CONFIG = osp.join(REPO, 'classification_distill', 'configs', 'finetune_tinyimagenet',
                       'resnet18_1xb128-200e_tinyimagenet_scratch.py')

# wnids.txt lists them unsorted; class index = position in the sorted list.
WNIDS = ['n01641577', 'n01443537', 'n01629819']
SORTED = sorted(WNIDS)  # n01443537 -> 0, n01629819 -> 1, n01641577 -> 2
WORDS = {'n01443537': 'goldfish, Carassius auratus',
         'n01629819': 'European fire salamander, Salamandra salamandra',
         'n01641577': 'bullfrog, Rana catesbeiana',
         'n00001740': 'entity'}
# Their positions in ImageNet-1k's LOC_synset_mapping.txt.
IMAGENET_INDEX = {'n01443537': 1, 'n01629819': 25, 'n01641577': 30}
UNKNOWN = 'n09999999'
# val_annotations.txt: file, wnid (+ box); line 3 names an unknown wnid, line 5 a missing image.
VAL_LINES = [('val_0.JPEG', 'n01629819'), ('val_1.JPEG', 'n01443537'), ('val_2.JPEG', UNKNOWN),
             ('val_3.JPEG', 'n01641577'), ('val_4.JPEG', 'n01443537')]
VAL_ON_DISK = ['val_0.JPEG', 'val_1.JPEG', 'val_2.JPEG', 'val_3.JPEG', 'val_9.JPEG']


def load_converter():
    """The converter as a module (tools/ is not a package)."""
    path = osp.join(REPO, 'tools', 'dataset_converters', 'tinyimagenet.py')
    spec = importlib.util.spec_from_file_location('tinyimagenet_converter', path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault('tinyimagenet_converter', module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def converter():
    return load_converter()


def _jpeg(path, seed):
    from PIL import Image
    os.makedirs(osp.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format='JPEG')


def _write(path, lines):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.writelines(f'{line}\n' for line in lines)


def make_fake_release(root):
    """Two train images a class (+ an unknown class folder, + a boxes line without its image),
    five val images (one unannotated), one test image."""
    root = str(root)
    _write(osp.join(root, 'wnids.txt'), WNIDS)
    _write(osp.join(root, 'words.txt'), [f'{w}\t{n}' for w, n in WORDS.items()])
    seed = 0
    for wnid in WNIDS + [UNKNOWN]:
        names = [f'{wnid}_{k}.JPEG' for k in range(2)]
        for name in names:
            _jpeg(osp.join(root, 'train', wnid, 'images', name), seed := seed + 1)
        listed = names + ([f'{wnid}_2.JPEG'] if wnid == 'n01629819' else [])
        _write(osp.join(root, 'train', wnid, f'{wnid}_boxes.txt'),
               [f'{name}\t0\t0\t7\t7' for name in listed])
    for name in VAL_ON_DISK:
        _jpeg(osp.join(root, 'val', 'images', name), seed := seed + 1)
    _write(osp.join(root, 'val', 'val_annotations.txt'),
           [f'{name}\t{wnid}\t0\t0\t7\t7' for name, wnid in VAL_LINES])
    _jpeg(osp.join(root, 'test', 'images', 'test_0.JPEG'), seed + 1)
    return root


def make_synsets(path, wnids=IMAGENET_INDEX):
    """A 1000-line LOC_synset_mapping.txt with ``wnids`` at their ImageNet-1k positions."""
    lines = [f'n{90000000 + i} filler class {i}' for i in range(1000)]
    for wnid, index in wnids.items():
        lines[index] = f'{wnid} {WORDS[wnid]}'
    _write(str(path), lines)
    return str(path)


def _read(path):
    with open(path, encoding='utf-8') as f:
        return f.read().splitlines()


@pytest.fixture(scope='module')
def converted(tmp_path_factory, converter):
    tmp = tmp_path_factory.mktemp('tiny')
    root = make_fake_release(tmp / 'tiny-imagenet-200')
    synsets = make_synsets(tmp / 'LOC_synset_mapping.txt')
    messages = []
    result = converter.convert(root, imagenet_synsets=synsets, log=messages.append)
    return dict(root=root, result=result, messages=messages)


def test_problems_are_reported_by_name(converted):
    problems = converted['result']['problems']
    assert problems == [
        f'train/{UNKNOWN}/: unknown wnid {UNKNOWN} (not in wnids.txt); skipped',
        'train/n01629819/n01629819_boxes.txt:3: missing image '
        'train/n01629819/images/n01629819_2.JPEG; skipped',
        f'val/val_annotations.txt:3: val/images/val_2.JPEG has unknown wnid {UNKNOWN} '
        '(not in wnids.txt); skipped',
        'val/val_annotations.txt:5: missing image val/images/val_4.JPEG; skipped',
        'val/images/val_9.JPEG: no line in val_annotations.txt; skipped',
    ]
    warnings = [m for m in converted['messages'] if m.startswith('WARNING ')]
    assert [w[len('WARNING '):] for w in warnings] == problems
    assert 'train: 6 images, val: 3 images; 5 problems' in converted['messages'][-1]


def test_writes_the_four_lists_and_nothing_else(converted):
    meta = osp.join(converted['root'], 'meta')
    assert sorted(os.listdir(meta)) == ['classes.txt', 'imagenet_class_index.txt', 'train.txt',
                                        'val.txt']  # no temporary file left behind


def test_class_index_is_the_sorted_wnid_position(converted):
    meta = osp.join(converted['root'], 'meta')
    assert _read(osp.join(meta, 'classes.txt')) == SORTED
    assert _read(osp.join(meta, 'train.txt')) == [
        f'train/{wnid}/images/{wnid}_{k}.JPEG {index}'
        for index, wnid in enumerate(SORTED) for k in range(2)]
    assert _read(osp.join(meta, 'val.txt')) == [
        'val/images/val_0.JPEG 1', 'val/images/val_1.JPEG 0', 'val/images/val_3.JPEG 2']
    for line in _read(osp.join(meta, 'train.txt')) + _read(osp.join(meta, 'val.txt')):
        assert osp.isfile(osp.join(converted['root'], line.split()[0]))


def test_imagenet_map_follows_the_synset_file(converted):
    lines = _read(osp.join(converted['root'], 'meta', 'imagenet_class_index.txt'))
    assert lines == [str(IMAGENET_INDEX[w]) for w in SORTED] == ['1', '25', '30']
    assert converted['result']['imagenet'] == [1, 25, 30]


def test_lists_load_through_the_tinyimagenet_config(converted):
    """The written lists are what the configs' CustomDataset reads (labels and images)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(TINY_CONFIG, import_custom_modules=False)
    root = converted['root']
    for split, n in (('train', 6), ('val', 3)):
        dataset_cfg = cfg[f'{split}_dataloader'].dataset
        dataset_cfg.update(data_root=root, classes=osp.join(root, 'meta', 'classes.txt'))
        dataset = DATASETS.build(dataset_cfg)
        assert len(dataset) == n and dataset.CLASSES == tuple(SORTED)
        labels = [int(dataset.get_data_info(i)['gt_label']) for i in range(n)]
        assert labels == ([0, 0, 1, 1, 2, 2] if split == 'train' else [1, 0, 2])
        sample = dataset[0]
        assert tuple(sample['inputs'].shape) == (3, 64, 64)
        assert int(sample['data_samples'].gt_label) == labels[0]


def test_readable_names(tmp_path, converter):
    root = make_fake_release(tmp_path / 'tiny')
    assert converter.main([root, '--class-names', 'words']) == 0
    assert _read(osp.join(root, 'meta', 'classes.txt')) == [
        'goldfish', 'European fire salamander', 'bullfrog']
    assert not osp.exists(osp.join(root, 'meta', 'imagenet_class_index.txt'))


def test_wnid_missing_from_synsets_skips_only_the_map(tmp_path, converter, capsys):
    root = make_fake_release(tmp_path / 'tiny')
    synsets = make_synsets(tmp_path / 'synsets.txt',
                           {w: i for w, i in IMAGENET_INDEX.items() if w != 'n01641577'})
    assert converter.main([root, '--imagenet-synsets', synsets]) == 0
    err = capsys.readouterr().err
    assert 'Tiny-ImageNet class 2 (n01641577) is not in it' in err
    assert 'imagenet_class_index.txt not written' in err
    assert sorted(os.listdir(osp.join(root, 'meta'))) == ['classes.txt', 'train.txt', 'val.txt']


def test_nothing_usable_exits_non_zero_and_writes_nothing(tmp_path, converter, capsys):
    root = str(tmp_path / 'empty')
    assert converter.main([root]) == 1
    assert 'wnids.txt' in capsys.readouterr().err
    _write(osp.join(root, 'wnids.txt'), WNIDS)
    assert converter.main([root]) == 1
    err = capsys.readouterr().err
    assert 'train/: missing folder' in err and 'val/val_annotations.txt: missing file' in err
    assert 'ERROR No usable image' in err
    assert not osp.exists(osp.join(root, 'meta'))
