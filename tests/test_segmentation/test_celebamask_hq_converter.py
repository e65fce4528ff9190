"""tools/dataset_converters/celebamask_hq.py on a tiny fake release in the official formats."""
import glob
import os
import os.path as osp

import numpy as np
from PIL import Image

from .conftest import load_converter, run_converter
from .fake_release import (BROKEN, EXPECTED_PIXELS, MASK_SIZE, SMALL_IMAGE_ID, SPLIT_OF,
                           expected_label)


def _ids(root, kind, split, ext):
    return {int(osp.splitext(osp.basename(p))[0])
            for p in glob.glob(osp.join(root, kind, split, f'*{ext}'))}


def test_conversion_succeeds_and_reports_the_counts(converted):
    assert converted.code == 0, converted.stderr
    assert 'Converted 7 images' in converted.stdout
    assert 'train 3, val 2, test 2' in converted.stdout


def test_official_split_through_the_mapping(converted):
    for split in ('train', 'val', 'test'):
        expected = {idx for idx, s in SPLIT_OF.items() if s == split}
        assert _ids(converted.root, 'img_dir', split, '.jpg') == expected, split
        assert _ids(converted.root, 'ann_dir', split, '.png') == expected, split


def test_labels_are_19_class_maps_with_the_paint_priority(converted):
    want = expected_label()
    for idx, split in SPLIT_OF.items():
        with Image.open(osp.join(converted.root, 'ann_dir', split, f'{idx}.png')) as img:
            assert img.mode == 'L' and img.size == (MASK_SIZE, MASK_SIZE)
            label = np.asarray(img)
        assert label.dtype == np.uint8
        assert set(np.unique(label)) <= set(range(19))
        for (row, col), value in EXPECTED_PIXELS.items():
            assert label[row, col] == value, (idx, row, col)
        np.testing.assert_array_equal(label, want)
    # every part of the fake masks is present, background included, and nothing else
    assert set(np.unique(want)) == {0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 12, 13, 14, 16, 17, 18}


def test_images_match_the_label_frame(converted, fake_release):
    for idx, split in SPLIT_OF.items():
        path = osp.join(converted.root, 'img_dir', split, f'{idx}.jpg')
        with Image.open(path) as img:
            assert img.format == 'JPEG' and img.mode == 'RGB' and img.size == (MASK_SIZE, MASK_SIZE)
    # an image already at the label size is copied, not re-encoded
    small = f'{SMALL_IMAGE_ID}.jpg'
    with open(osp.join(fake_release, 'CelebA-HQ-img', small), 'rb') as f:
        original = f.read()
    with open(osp.join(converted.root, 'img_dir', SPLIT_OF[SMALL_IMAGE_ID], small), 'rb') as f:
        assert f.read() == original


def test_problems_are_reported_by_name_and_skipped(converted):
    report_path = osp.join(converted.root, 'conversion_report.txt')
    with open(report_path) as f:
        report = f.read()
    for idx, name in BROKEN.items():
        assert name in converted.stdout, name
        assert name in report, name
        for kind, ext in (('img_dir', '.jpg'), ('ann_dir', '.png')):
            assert not glob.glob(osp.join(converted.root, kind, '*', f'{idx}{ext}')), idx
    assert 'mask unreadable' in report and 'mask of the wrong size' in report
    assert '64x64, expected 128x128' in report
    assert 'image missing' in report and 'id 10' in report


def test_outputs_are_written_atomically(converted):
    leftovers = [p for p in glob.glob(osp.join(converted.root, '**', '*'), recursive=True)
                 if p.endswith('.tmp') or osp.basename(p).startswith('.')]
    assert leftovers == []


def test_single_process_matches_the_pool(converted, tmp_path):
    counts, problems = load_converter().convert(converted.src, str(tmp_path), workers=1,
                                                size=MASK_SIZE, progress=False)
    assert dict(counts) == dict(train=3, val=2, test=2)
    assert sum(len(v) for v in problems.values()) == len(BROKEN)
    for split in ('train', 'val', 'test'):
        for idx in _ids(converted.root, 'ann_dir', split, '.png'):
            a = np.asarray(Image.open(osp.join(converted.root, 'ann_dir', split, f'{idx}.png')))
            b = np.asarray(Image.open(osp.join(tmp_path, 'ann_dir', split, f'{idx}.png')))
            np.testing.assert_array_equal(a, b)


def _write_lists(src, mapping):
    os.makedirs(src, exist_ok=True)
    with open(osp.join(src, 'CelebA-HQ-to-CelebA-mapping.txt'), 'w') as f:
        f.write('idx orig_idx orig_file\n')
        f.writelines(f'{idx} {n - 1} {n:06d}.jpg\n' for idx, n in mapping.items())
    with open(osp.join(src, 'list_eval_partition.txt'), 'w') as f:
        f.writelines(f'{n:06d}.jpg 0\n' for n in mapping.values())


def test_exit_code_is_nonzero_only_when_nothing_converted(tmp_path):
    src = str(tmp_path / 'src')
    _write_lists(src, {0: 1, 1: 2})
    folder = osp.join(src, 'CelebAMask-HQ-mask-anno', '0')
    os.makedirs(folder)
    Image.new('L', (MASK_SIZE, MASK_SIZE), 255).save(osp.join(folder, '00000_skin.png'))
    code, stdout, stderr = run_converter([src, str(tmp_path / 'out'), '--workers', '1',
                                          '--size', str(MASK_SIZE)])
    assert code == 1
    assert 'nothing could be converted' in stderr
    assert 'CelebA-HQ-img/0.jpg' in stdout and 'CelebA-HQ-img/1.jpg' in stdout

    os.remove(osp.join(src, 'CelebA-HQ-to-CelebA-mapping.txt'))
    code, _, stderr = run_converter([src, str(tmp_path / 'out2'), '--workers', '1'])
    assert code == 1 and 'CelebA-HQ-to-CelebA-mapping.txt not found' in stderr
