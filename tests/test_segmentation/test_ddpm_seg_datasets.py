"""Readers of the ddpm-segmentation release and the digits few-label segmentation set."""
import os
import os.path as osp
import shutil

import numpy as np
import pytest
from PIL import Image

from segmentation.datasets.ddpm_seg import (DDPM_SEG_DATASETS, DDPMSegDataError, DDPMSegDataset,
                                            LoadNpyAnnotations, drop_small_classes,
                                            load_ddpm_seg_split, read_mask, resize_mask)
from segmentation.datasets.digits_seg import (digits_seg_masks, select_digits,
                                              write_digits_seg_release)
from tests.helpers.fake_ddpm_seg import TRAIN_SORTED, write_fake_ddpm_seg_release

SIZE = 20  # side of the fake release's images and masks


@pytest.fixture(scope='module')
def release(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('ddpm_seg_release'))
    masks = write_fake_ddpm_seg_release(root, 'cat_15', size=SIZE, seed=0)
    return root, masks


def _torchvision_resize(path, size):
    """What the reference feeds its feature extractor (before ToTensor): an independent check."""
    from torchvision import transforms
    with Image.open(path) as pil:
        return np.asarray(transforms.Resize(size)(pil.convert('RGB')))


def _nearest(mask, size):
    """Nearest resize written out: output pixel i takes input pixel floor(i * in / out)."""
    rows = np.floor(np.arange(size) * mask.shape[0] / size).astype(int)
    cols = np.floor(np.arange(size) * mask.shape[1] / size).astype(int)
    return mask[rows][:, cols]


def _copy_release(release, tmp_path):
    root = str(tmp_path / 'copy')
    shutil.copytree(release[0], root)
    return root


# ---------------------------------------------------------------------------------------------
# dataset table
# ---------------------------------------------------------------------------------------------
def test_table_matches_reference_configs():
    expected = {  # name: (number_class, ignore_label, train, test)
        'bedroom_28': (29, 0, 40, 20), 'ffhq_34': (34, 255, 20, 20), 'cat_15': (15, 255, 30, 20),
        'horse_21': (21, 255, 30, 30), 'celeba_19': (19, 255, 20, 500),
        'ade_bedroom_30': (30, 255, 50, 650), 'digits_11': (11, 255, 20, 100)}
    assert set(DDPM_SEG_DATASETS) == set(expected)
    for name, (number_class, ignore, train, test) in expected.items():
        info = DDPM_SEG_DATASETS[name]
        assert (info.number_class, info.ignore_label, info.num_train, info.num_test) == (
            number_class, ignore, train, test), name
        assert len(info.palette) == number_class
        assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in info.palette)
        assert len(set(info.classes)) == number_class, name
    assert DDPM_SEG_DATASETS['bedroom_28'].classes[:3] == ('background', 'bed', 'bed***footboard')
    assert DDPM_SEG_DATASETS['bedroom_28'].classes[-1] == 'table staff'
    assert DDPM_SEG_DATASETS['ffhq_34'].classes[-1] == 'head***wrinkles'
    assert DDPM_SEG_DATASETS['ffhq_34'].palette[1] == (112, 130, 107)  # int(0.4420 * 255) ...
    assert DDPM_SEG_DATASETS['celeba_19'].classes[17] == 'skin'
    assert DDPM_SEG_DATASETS['ade_bedroom_30'].classes[0] == 'wall'
    assert DDPM_SEG_DATASETS['ade_bedroom_30'].classes[-1] == 'television'
    assert DDPM_SEG_DATASETS['digits_11'].classes == ('background', ) + tuple('0123456789')


# ---------------------------------------------------------------------------------------------
# load_ddpm_seg_split
# ---------------------------------------------------------------------------------------------
def test_first_n_sorted_and_resizes(release):
    root, masks = release
    items = load_ddpm_seg_split(root, 'cat_15', 'train', number=3, image_size=16,
                                drop_small=False)
    assert [it['stem'] for it in items] == list(TRAIN_SORTED[:3])  # a.jpg, b.png, d.jpeg
    folder = osp.join(root, 'cat_15', 'real', 'train')
    for it, name in zip(items, ('a.jpg', 'b.png', 'd.jpeg')):
        assert it['image'].dtype == np.uint8 and it['image'].shape == (16, 16, 3)
        np.testing.assert_array_equal(it['image'], _torchvision_resize(osp.join(folder, name), 16))
        assert it['mask'].dtype == np.uint8 and it['mask'].shape == (16, 16)
        np.testing.assert_array_equal(it['mask'], _nearest(masks['train'][it['stem']], 16))


def test_gif_upper_case_and_subfolder_images(release):
    root, masks = release
    items = load_ddpm_seg_split(root, 'cat_15', 'train', number=5, image_size=SIZE,
                                drop_small=False)
    assert [it['stem'] for it in items] == list(TRAIN_SORTED)  # notes.txt and .npy skipped
    folder = osp.join(root, 'cat_15', 'real', 'train')
    gif = items[-1]
    with Image.open(osp.join(folder, 'sub', 'c.gif')) as pil:
        np.testing.assert_array_equal(gif['image'], np.asarray(pil.convert('RGB')))
    for it in items:  # no resize at the native size: masks unchanged
        np.testing.assert_array_equal(it['mask'], masks['train'][it['stem']])


def test_upsampling_masks_repeats_pixels(release):
    root, masks = release
    items = load_ddpm_seg_split(root, 'cat_15', 'test', image_size=2 * SIZE, number=2)
    for it in items:
        src = masks['test'][it['stem']]
        np.testing.assert_array_equal(it['mask'], np.repeat(np.repeat(src, 2, 0), 2, 1))


def test_default_number_is_the_config_count(release):
    with pytest.raises(DDPMSegDataError, match=r'expected at least 30 images .* found 5\. '):
        load_ddpm_seg_split(release[0], 'cat_15', 'train')
    with pytest.raises(DDPMSegDataError, match=r'expected at least 20 images .* found 3'):
        load_ddpm_seg_split(release[0], 'cat_15', 'test')


def test_small_classes_dropped_in_train_only(release):
    root, _ = release
    raw = load_ddpm_seg_split(root, 'cat_15', 'train', number=5, image_size=16, drop_small=False)
    train = load_ddpm_seg_split(root, 'cat_15', 'train', number=5, image_size=16)
    changed = 0
    for r, t in zip(raw, train):
        np.testing.assert_array_equal(t['mask'], drop_small_classes(r['mask'], 255))
        np.testing.assert_array_equal(t['image'], r['image'])
        changed += int((t['mask'] != r['mask']).sum())
    assert changed > 0  # the fake masks do hold classes under 20 pixels at 16 x 16
    test_raw = load_ddpm_seg_split(root, 'cat_15', 'test', number=3, image_size=16,
                                   drop_small=False)
    test = load_ddpm_seg_split(root, 'cat_15', 'test', number=3, image_size=16)
    for r, t in zip(test_raw, test):
        np.testing.assert_array_equal(t['mask'], r['mask'])


def test_drop_small_classes_by_hand():
    mask = np.zeros(64, dtype=np.uint8)
    mask[20:39] = 1  # 19 pixels -> ignored
    mask[39] = 2  # 1 pixel -> ignored
    mask[40:60] = 3  # exactly 20 pixels -> kept
    mask[60:64] = 255  # the ignore label, 4 pixels -> stays 255
    out = drop_small_classes(mask.reshape(8, 8), ignore_label=255)
    expected = mask.copy()
    expected[20:40] = 255
    np.testing.assert_array_equal(out, expected.reshape(8, 8))
    np.testing.assert_array_equal(mask[20:39], 1)  # input untouched
    # bedroom_28: the ignore label is 0; its few pixels are not a "class" to drop
    bed = np.full((5, 5), 7, dtype=np.uint8)
    bed[0, :3] = 0
    bed[4, 4] = 9
    out = drop_small_classes(bed, ignore_label=0)
    assert (out == 0).sum() == 4 and (out == 7).sum() == 21 and 9 not in out
    # a threshold of 2 keeps the 19-pixel class and drops only the single pixel
    out = drop_small_classes(mask, 255, min_pixels=2)
    assert (out == 1).sum() == 19 and 2 not in out


def test_resize_mask_nearest_by_hand():
    m = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    np.testing.assert_array_equal(
        resize_mask(m, 4), [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    big = np.arange(16, dtype=np.uint8).reshape(4, 4)
    np.testing.assert_array_equal(resize_mask(big, 2), [[0, 2], [8, 10]])
    three = np.arange(9, dtype=np.uint8).reshape(3, 3)  # floor(i * 3 / 2) = 0, 1
    np.testing.assert_array_equal(resize_mask(three, 2), [[0, 1], [3, 4]])
    np.testing.assert_array_equal(resize_mask(three, (2, 3)), [[0, 1, 2], [3, 4, 5]])


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_unknown_dataset_and_split(release):
    with pytest.raises(DDPMSegDataError,
                       match=r"Unknown ddpm-segmentation dataset 'cat15'.*Did you mean 'cat_15'"):
        load_ddpm_seg_split(release[0], 'cat15', 'train')
    with pytest.raises(DDPMSegDataError, match=r"split='val' is not a split .*'train', 'test'"):
        load_ddpm_seg_split(release[0], 'cat_15', 'val')
    with pytest.raises(DDPMSegDataError, match=r'number=0 is not a positive integer'):
        load_ddpm_seg_split(release[0], 'cat_15', 'train', number=0)


def test_missing_folder(tmp_path, release):
    with pytest.raises(DDPMSegDataError, match=r'horse_21/real/train: expected the folder of the '
                       r'train images of horse_21 .* does not exist\. Extract the release'):
        load_ddpm_seg_split(release[0], 'horse_21', 'train', number=1)
    # root one level too high (the archive's "datasets" folder around the release)
    outer = tmp_path / 'outer'
    os.makedirs(outer / 'datasets' / 'cat_15')
    with pytest.raises(DDPMSegDataError, match=r'root should probably be that "datasets" folder'):
        load_ddpm_seg_split(str(outer), 'cat_15', 'train', number=1)


def test_fewer_files_than_number(release):
    with pytest.raises(DDPMSegDataError, match=r'expected at least 6 images \(png/jpg/jpeg/gif\) '
                       r'for cat_15/train, found 5\. .*\(number=5\)'):
        load_ddpm_seg_split(release[0], 'cat_15', 'train', number=6)


def test_missing_mask(tmp_path, release):
    root = _copy_release(release, tmp_path)
    os.remove(osp.join(root, 'cat_15', 'real', 'train', 'b.npy'))
    with pytest.raises(DDPMSegDataError, match=r'b\.png: expected its mask .*b\.npy .* but there '
                       r'is none'):
        load_ddpm_seg_split(root, 'cat_15', 'train', number=2)
    # only the selected images need masks: the first one (a.jpg) alone is fine
    assert len(load_ddpm_seg_split(root, 'cat_15', 'train', number=1)) == 1


def test_non_square_image(tmp_path, release):
    root = _copy_release(release, tmp_path)
    Image.new('RGB', (12, 10)).save(osp.join(root, 'cat_15', 'real', 'train', 'a.jpg'))
    with pytest.raises(DDPMSegDataError, match=r'a\.jpg: expected a square image .* got width 12 '
                       r'x height 10\. Crop it'):
        load_ddpm_seg_split(root, 'cat_15', 'train', number=1)


def test_class_id_out_of_range(tmp_path, release):
    root = _copy_release(release, tmp_path)
    path = osp.join(root, 'cat_15', 'real', 'test', 't0.npy')
    mask = np.load(path)
    mask[0, 0], mask[0, 1] = 15, 254  # cat_15: ids 0..14 and 255
    np.save(path, mask)
    with pytest.raises(DDPMSegDataError, match=r't0\.npy: class id\(s\) \[15, 254\] out of range; '
                       r'expected ids 0\.\.14 or the ignore label 255'):
        load_ddpm_seg_split(root, 'cat_15', 'test', number=1)
    mask = mask.astype(np.int64)
    mask[0, :2] = 3
    mask[1, 1] = -1  # a negative id is caught before the cast to uint8 would wrap it to 255
    np.save(path, mask)
    with pytest.raises(DDPMSegDataError, match=r'class id\(s\) \[-1\] out of range'):
        load_ddpm_seg_split(root, 'cat_15', 'test', number=1)


def test_malformed_masks(tmp_path):
    path = str(tmp_path / 'm.npy')
    np.save(path, np.zeros((2, 4, 4), dtype=np.uint8))
    with pytest.raises(DDPMSegDataError, match=r'expected a 2-D mask \[height, width\] of class '
                       r'ids, got shape \(2, 4, 4\)'):
        read_mask(path, 15, 255)
    np.save(path, np.full((4, 4), 0.5))
    with pytest.raises(DDPMSegDataError, match=r'expected integer class ids, got dtype float64'):
        read_mask(path, 15, 255)
    np.save(path, np.array([[{'a': 1}]], dtype=object))
    with pytest.raises(DDPMSegDataError, match=r'no pickled objects'):
        read_mask(path, 15, 255)
    np.save(path, np.full((4, 4), 3.0))  # integral floats are class ids
    np.testing.assert_array_equal(read_mask(path, 15, 255), np.full((4, 4), 3, np.uint8))


# ---------------------------------------------------------------------------------------------
# mmseg dataset + LoadNpyAnnotations
# ---------------------------------------------------------------------------------------------
def _dataset(root, name='cat_15', **kwargs):
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    kwargs.setdefault('pipeline', [dict(type='LoadImageFromFile', imdecode_backend='pillow'),
                                   dict(type='LoadNpyAnnotations')])
    return DATASETS.build(dict(type='DDPMSegDataset', name=name, data_root=root, **kwargs))


def test_mmseg_dataset_gives_the_masks(release):
    root, masks = release
    ds = _dataset(root, split='train', number=5, test_mode=True)
    assert isinstance(ds, DDPMSegDataset) and len(ds) == 5
    assert ds.metainfo['classes'] == DDPM_SEG_DATASETS['cat_15'].classes
    assert ds.metainfo['palette'][1] == [190, 153, 153]
    assert ds.ignore_index == 255 and ds.reduce_zero_label is False
    folder = osp.join(root, 'cat_15', 'real', 'train')
    for i, stem in enumerate(TRAIN_SORTED):
        out = ds[i]
        assert osp.splitext(out['img_path'])[0] == osp.join(folder, stem)
        assert out['seg_map_path'] == osp.join(folder, stem + '.npy')
        assert out['img'].shape == (SIZE, SIZE, 3)
        assert out['gt_seg_map'].dtype == np.uint8
        np.testing.assert_array_equal(out['gt_seg_map'], masks['train'][stem])
        assert out['seg_fields'] == ['gt_seg_map']
    # the test split, default count, needs 20 images: a clear error, not an empty dataset
    with pytest.raises(DDPMSegDataError, match=r'expected at least 20 images'):
        _dataset(root)


def test_load_npy_annotations_resizes_and_follows_resize(tmp_path, release):
    root = _copy_release(release, tmp_path)
    folder = osp.join(root, 'cat_15', 'real', 'test')
    big = np.repeat(np.repeat(np.load(osp.join(folder, 't0.npy')), 2, 0), 2, 1)
    np.save(osp.join(folder, 't0.npy'), big)  # a mask twice the image's size
    ds = _dataset(root, number=3, test_mode=True)
    np.testing.assert_array_equal(ds[0]['gt_seg_map'], _nearest(big, SIZE))
    # a later Resize resizes the mask with nearest, as for mmseg's LoadAnnotations
    ds = _dataset(root, number=3, test_mode=True, pipeline=[
        dict(type='LoadImageFromFile'), dict(type='LoadNpyAnnotations'),
        dict(type='Resize', scale=(10, 10), keep_ratio=False)])
    out = ds[1]
    assert out['img'].shape == (10, 10, 3)
    np.testing.assert_array_equal(out['gt_seg_map'], resize_mask(np.load(osp.join(
        folder, 't1.npy')), 10))
    # the transform alone, with a label map, as LoadAnnotations applies it
    results = dict(seg_map_path=osp.join(folder, 't1.npy'), label_map={1: 2, 2: 1},
                   reduce_zero_label=False, seg_fields=[])
    out = LoadNpyAnnotations()(results)
    src = np.load(osp.join(folder, 't1.npy'))
    expected = src.copy()
    expected[src == 1], expected[src == 2] = 2, 1
    np.testing.assert_array_equal(out['gt_seg_map'], expected)


def test_mmseg_dataset_ignore_and_option_errors(tmp_path):
    root = str(tmp_path)
    write_fake_ddpm_seg_release(root, 'bedroom_28', size=8, seed=1)
    ds = _dataset(root, name='bedroom_28', number=3, test_mode=True)
    assert ds.ignore_index == 0 and ds.metainfo['classes'][0] == 'background'
    with pytest.raises(DDPMSegDataError, match=r'ignore_index=255 differs from the dataset\'s '
                       r'ignore label 0'):
        _dataset(root, name='bedroom_28', number=3, ignore_index=255)
    with pytest.raises(DDPMSegDataError, match=r'reduce_zero_label=True would shift every class'):
        _dataset(root, name='bedroom_28', number=3, reduce_zero_label=True)
    with pytest.raises(DDPMSegDataError, match=r'metainfo classes .* differ from the dataset'):
        _dataset(root, name='bedroom_28', number=3, metainfo=dict(classes=('a', 'b')))
    with pytest.raises(DDPMSegDataError, match=r'data_root is empty'):
        _dataset('', name='bedroom_28', number=3)


# ---------------------------------------------------------------------------------------------
# digits few-label segmentation
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def digits_release(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('digits_seg'))
    write_digits_seg_release(root, num_train=20, num_test=30, seed=0)
    return root


def test_digits_masks_are_thresholded_images(digits_release):
    from common.datasets.digits import _load_digits, digits_split_indices, upsample_digits
    images, labels = _load_digits()
    train_pool = set(digits_split_indices(labels, 'train').tolist())
    test_pool = set(digits_split_indices(labels, 'test').tolist())
    seen = {}
    for split, n in (('train', 20), ('test', 30)):
        items = load_ddpm_seg_split(digits_release, 'digits_11', split, number=n, image_size=32,
                                    drop_small=False)
        assert len(items) == n
        idx = np.array([int(it['stem'].rsplit('_idx', 1)[1]) for it in items])
        digit = np.array([int(it['stem'].split('_digit')[1][0]) for it in items])
        np.testing.assert_array_equal(digit, labels[idx])
        pixels = upsample_digits(images[idx], 32, 'bilinear')  # what the teacher sees
        for it, img, d in zip(items, pixels, digit):
            np.testing.assert_array_equal(it['image'], img)
            fg = img[..., 0] > 127
            assert fg.any() and (~fg).any()
            np.testing.assert_array_equal(it['mask'][fg], d + 1)
            np.testing.assert_array_equal(it['mask'][~fg], 0)
        assert set(idx.tolist()) <= (train_pool if split == 'train' else test_pool)
        seen[split] = set(idx.tolist())
        # class-balanced: the 20 train images are two of each digit
        if split == 'train':
            assert np.bincount(digit, minlength=10).tolist() == [2] * 10
    assert not seen['train'] & seen['test']


def test_digits_defaults_and_prefix_selection(digits_release):
    # the reader's default train count (20) matches the writer's default
    assert len(load_ddpm_seg_split(digits_release, 'digits_11', 'train', image_size=32)) == 20
    # the first 10 of a 20-image selection are the 10-image selection: one of each digit
    np.testing.assert_array_equal(select_digits('train', 10, seed=0),
                                  select_digits('train', 20, seed=0)[:10])
    assert sorted(select_digits('train', 10, seed=3).tolist()) != sorted(
        select_digits('train', 10, seed=0).tolist())
    with pytest.raises(DDPMSegDataError, match=r'num_train=5000: expected an integer from 1 to '
                       r'1197'):
        select_digits('train', 5000)


def test_digits_seg_masks_by_hand():
    img = np.zeros((2, 2, 2, 3), dtype=np.uint8)
    img[0, 0, 0] = 128
    img[0, 1, 1] = 127  # not above the threshold
    img[1, 1, 0] = 255
    masks = digits_seg_masks(img, [3, 9])
    np.testing.assert_array_equal(masks, [[[4, 0], [0, 0]], [[0, 0], [10, 0]]])
