"""tools/dataset_converters/wflw.py on a tiny fake release in the official format."""
import json
import os

import numpy as np
import pytest

from .fake_wflw import ATTRIBUTES, LIST_DIR, make_fake_release, synthetic_face

SUBSET_FILES = {a: f'face_landmarks_wflw_test_{a}.json' for a in ATTRIBUTES}


def _load(fake_wflw, name):
    with open(fake_wflw['ann_dir'] / name) as f:
        return json.load(f)


def test_malformed_line_and_missing_image_are_reported_by_line(fake_wflw):
    problems = fake_wflw['result']['problems']
    assert len(problems) == 2
    assert problems[0].startswith('list_98pt_rect_attr_train.txt:3: malformed line')
    assert 'expected 207 fields' in problems[0] and 'got 206' in problems[0]
    assert problems[1].startswith('list_98pt_rect_attr_test.txt:2: missing image')
    assert '13--Interview/13_missing.jpg' in problems[1]
    warnings = [m for m in fake_wflw['messages'] if m.startswith('WARNING')]
    assert len(warnings) == 2
    assert any('train: 4 faces in 3 images, 1 lines skipped' in m for m in fake_wflw['messages'])
    assert any('test: 4 faces in 3 images, 1 lines skipped' in m for m in fake_wflw['messages'])


def test_writes_train_test_and_six_subset_files(fake_wflw):
    names = sorted(os.listdir(fake_wflw['ann_dir']))
    assert names == sorted(['face_landmarks_wflw_train.json', 'face_landmarks_wflw_test.json']
                           + list(SUBSET_FILES.values()))  # no temporary file left behind


@pytest.mark.parametrize('split', ['train', 'test'])
def test_json_content(fake_wflw, split):
    coco = _load(fake_wflw, f'face_landmarks_wflw_{split}.json')
    kept = fake_wflw['kept'][split]
    images = {im['id']: im for im in coco['images']}
    assert len(images) == len({k['image'] for k in kept}) == 3
    assert coco['categories'][0]['id'] == 1 and len(coco['categories'][0]['keypoints']) == 98
    assert len(coco['annotations']) == len(kept) == 4
    for ann, face in zip(coco['annotations'], kept):
        image = images[ann['image_id']]
        assert image['file_name'] == face['image']
        assert (image['width'], image['height']) == face['size']  # read from the jpg
        kpts = np.array(ann['keypoints']).reshape(98, 3)
        np.testing.assert_allclose(kpts[:, :2], face['points'], atol=1e-3)
        assert (kpts[:, 2] == 2).all() and ann['num_keypoints'] == 98
        x1, y1, x2, y2 = face['box']
        assert ann['bbox'] == [x1, y1, x2 - x1, y2 - y1]
        assert ann['area'] == (x2 - x1) * (y2 - y1)
        assert ann['iscrowd'] == 0 and ann['category_id'] == 1
        assert ann['attributes'] == {a: int(face['flags'].get(a, 0)) for a in ATTRIBUTES}
        assert ann['center'] == [(x1 + x2) / 2, (y1 + y2) / 2]
        assert ann['scale'] == pytest.approx(max(x2 - x1, y2 - y1) / 200)
    assert len({a['image_id'] for a in coco['annotations']}) == 3  # two faces share an image
    assert len({a['id'] for a in coco['annotations']}) == 4


@pytest.mark.parametrize('attribute', ATTRIBUTES)
def test_subset_files_hold_exactly_the_flagged_faces(fake_wflw, attribute):
    full = _load(fake_wflw, 'face_landmarks_wflw_test.json')
    subset = _load(fake_wflw, SUBSET_FILES[attribute])
    flagged = [a for a, face in zip(full['annotations'], fake_wflw['kept']['test'])
               if face['flags'].get(attribute)]
    assert flagged, 'the fake release flags every attribute at least once'
    assert subset['annotations'] == flagged  # same ids, same content
    assert {im['id'] for im in subset['images']} == {a['image_id'] for a in flagged}
    assert all(im in full['images'] for im in subset['images'])


def test_parse_line_explains_what_is_wrong(converter):
    pts = synthetic_face(50, 50, 20)
    fields = ([f'{v:.2f}' for v in pts.reshape(-1)] + ['10', '10', '90', '90'] + ['0'] * 6
              + ['a.jpg'])
    face = converter.parse_line(' '.join(fields))
    assert face['box'] == (10, 10, 90, 90) and face['image'] == 'a.jpg'
    assert face['attributes'] == dict.fromkeys(ATTRIBUTES, 0)
    for index, value, message in [(7, 'abc', 'coordinate 8 is not a number'),
                                  (7, 'nan', 'coordinate 8 is not finite'),
                                  (198, '5', 'empty face box'),
                                  (202, '2', 'attribute flag illumination must be 0 or 1')]:
        bad = list(fields)
        bad[index] = value
        with pytest.raises(converter.MalformedLineError, match=message):
            converter.parse_line(' '.join(bad))


def test_cli_strict_writes_nothing_and_missing_release_fails(converter, tmp_path, capsys):
    root = tmp_path / 'release'
    make_fake_release(str(root))
    out = tmp_path / 'out'
    assert converter.main([str(root), str(out), '--strict', '--no-progress']) == 1
    err = capsys.readouterr().err
    assert 'list_98pt_rect_attr_train.txt:3: malformed line' in err and '--strict' in err
    assert not out.exists()
    assert converter.main([str(tmp_path / 'nowhere'), str(out), '--no-progress']) == 1
    assert 'WFLW_images' in capsys.readouterr().err
    (root / LIST_DIR / 'list_98pt_rect_attr_test.txt').unlink()
    assert converter.main([str(root), str(out), '--no-progress']) == 1
    assert 'list_98pt_rect_attr_test.txt' in capsys.readouterr().err
    assert not out.exists()
