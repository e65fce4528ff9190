"""The release readers of correspondence.datasets against tiny fake releases in the real formats."""
import json
import os
import os.path as osp
import shutil

import numpy as np
import pytest
from mmengine.registry import DATASETS

from correspondence.datasets import (CorrespondenceDataError, CUBPairsDataset, PFPascalDataset,
                                     PFWillowDataset, SPair71kDataset, SPAIR_CATEGORIES)

from . import fake_releases


@pytest.fixture(scope='module')
def releases(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('releases'))
    return dict(
        spair=fake_releases.write_spair(root),
        willow=fake_releases.write_pf_willow(osp.join(root, 'willow')),
        willow_renamed=fake_releases.write_pf_willow(osp.join(root, 'renamed'),
                                                     folder='PF-WILLOW'),
        pascal=fake_releases.write_pf_pascal(osp.join(root, 'pascal')),
        cub=fake_releases.write_cub(root),
    )


def assert_pairs_equal(actual, expected):
    assert [p['pair_id'] for p in actual] == [p['pair_id'] for p in expected]
    for got, want in zip(actual, expected):
        assert set(want) <= set(got), sorted(set(want) - set(got))
        for key, value in want.items():
            if key.endswith('_kps'):
                assert got[key].dtype == np.float32 and got[key].shape == value.shape, key
                np.testing.assert_array_equal(got[key], value, err_msg=f'{want["pair_id"]} {key}')
            elif key.endswith('_img_path'):
                assert got[key] == osp.abspath(value)
                assert osp.isfile(got[key])
            else:
                assert got[key] == value, (want['pair_id'], key, got[key], value)


def data_list(dataset):
    return [dataset.get_data_info(i) for i in range(len(dataset))]


# ------------------------------------------------------------------------------ SPair-71k
@pytest.mark.parametrize('split', ['test', 'trn', 'val'])
def test_spair_reads_every_split(releases, split):
    spair = releases['spair']
    dataset = SPair71kDataset(data_root=spair['root'], split=split)
    assert_pairs_equal(data_list(dataset), spair['pairs'][split])
    assert dataset.metainfo['classes'] == SPAIR_CATEGORIES


def test_spair_exact_values_and_registry(releases, capfd):
    spair = releases['spair']
    dataset = DATASETS.build(dict(type='SPair71kDataset', data_root=spair['root']))
    assert capfd.readouterr().err == ''  # no progress bar when stderr is not a terminal
    first = dataset.get_data_info(0)
    assert first['pair_id'] == '000001-2008_000001-2008_000002:aeroplane'
    assert first['kps_ids'] == [0, 1, 4]
    np.testing.assert_array_equal(first['src_kps'], [[5, 6], [10, 12], [30, 20]])
    np.testing.assert_array_equal(first['trg_kps'], [[6, 7], [12, 10], [28, 18]])
    assert first['src_bbox'] == [2.0, 3.0, 35.0, 27.0]
    assert first['trg_imsize'] == (36, 32)
    assert first['difficulty'] == dict(viewpoint_variation=1, scale_variation=0, truncation=0,
                                       occlusion=1, mirror=0)
    assert (first['src_pose'], first['trg_pose']) == ('Left', 'Right')


def test_spair_filters(releases):
    spair = releases['spair']
    test = spair['pairs']['test']
    cats = SPair71kDataset(data_root=spair['root'], categories=['cat'])
    assert_pairs_equal(data_list(cats), [p for p in test if p['category'] == 'cat'])
    assert cats.metainfo['classes'] == ('cat',)
    hard = SPair71kDataset(data_root=spair['root'], difficulty=dict(viewpoint_variation=2))
    assert [p['pair_id'][:6] for p in data_list(hard)] == ['000002', '000003']
    some = SPair71kDataset(data_root=spair['root'],
                           difficulty=dict(viewpoint_variation=[0, 1], mirror=0))
    assert [p['pair_id'][:6] for p in data_list(some)] == ['000001', '000004']
    with pytest.raises(ValueError, match='not SPair-71k flags'):
        SPair71kDataset(data_root=spair['root'], difficulty=dict(viewpoint=2))
    with pytest.raises(ValueError, match='not SPair-71k categories'):
        SPair71kDataset(data_root=spair['root'], categories=['dog', 'dragon'])


def test_spair_sampling_per_category(releases):
    root = releases['spair']['root']
    ids = lambda ds: [p['pair_id'] for p in data_list(ds)]  # noqa: E731
    one = SPair71kDataset(data_root=root, max_pairs_per_category=2, seed=3)
    picked = ids(one)
    assert len(picked) == 3  # 2 of 3 aeroplane pairs, the only cat pair
    assert len(set(picked)) == 3 and sum(p.endswith(':aeroplane') for p in picked) == 2
    assert ids(SPair71kDataset(data_root=root, max_pairs_per_category=2, seed=3)) == picked
    assert ids(SPair71kDataset(data_root=root, max_pairs_per_category=10)) == [
        p['pair_id'] for p in releases['spair']['pairs']['test']]
    drawn = {tuple(ids(SPair71kDataset(data_root=root, max_pairs_per_category=2, seed=s)))
             for s in range(8)}
    assert len(drawn) > 1  # the seed matters
    # SD-DINO's faithful option: with replacement, exactly n per category, repeats allowed
    rep = ids(SPair71kDataset(data_root=root, max_pairs_per_category=5, replace=True, seed=0))
    assert len(rep) == 10 and rep[-5:] == ['000004-2009_000010-2009_000011:cat'] * 5


# ------------------------------------------------------------------------------ PF-WILLOW
def test_pf_willow(releases):
    willow = releases['willow']
    dataset = DATASETS.build(dict(type='PFWillowDataset', data_root=willow['root']))
    assert_pairs_equal(data_list(dataset), willow['pairs'])
    first = dataset.get_data_info(0)
    assert first['category'] == 'car(G)' and first['class'] == 'car'
    assert first['src_bbox'] is None and first['src_kps'].shape == (10, 2)
    assert first['src_imsize'] == (40, 30)  # from the PNG header
    assert dataset.metainfo['classes'][0] == 'car(G)' and len(dataset.metainfo['classes']) == 10


def test_pf_willow_renamed_folder(releases):
    renamed = releases['willow_renamed']
    assert osp.basename(renamed['root']) == 'PF-WILLOW'
    assert not osp.exists(osp.join(renamed['root'], 'PF-dataset'))
    dataset = PFWillowDataset(data_root=renamed['root'])
    assert_pairs_equal(data_list(dataset), renamed['pairs'])


# ------------------------------------------------------------------------------ PF-PASCAL
def test_pf_pascal(releases):
    pascal = releases['pascal']
    test = PFPascalDataset(data_root=pascal['root'])
    assert_pairs_equal(data_list(test), pascal['pairs']['test'])
    second = test.get_data_info(1)
    assert second['category'] == 'dog' and second['kps_ids'] == [0, 1, 2, 3]  # padding dropped
    np.testing.assert_array_equal(second['trg_kps'], [[6, 7], [11, 12], [30, 14], [40, 20]])
    assert test.get_data_info(0)['src_kps'][1, 0] == np.float32(10.5)
    val = DATASETS.build(dict(type='PFPascalDataset', data_root=pascal['root'], split='val'))
    assert_pairs_equal(data_list(val), pascal['pairs']['val'])
    assert val.get_data_info(0)['category'] == 'tvmonitor'
    assert len(test.metainfo['classes']) == 20


# ------------------------------------------------------------------------------ CUB
def test_cub_all_pairs(releases):
    cub = releases['cub']
    dataset = CUBPairsDataset(data_root=cub['root'], num_pairs=None)
    # class 1 test images 1, 3, 4, 5: 6 pairs, those with image 5 share no part -> 3;
    # class 2 test images 6, 7, 9: 3 pairs, all share a part
    assert len(dataset) == 6
    assert_pairs_equal(data_list(dataset), cub['pairs'])
    first = dataset.get_data_info(0)
    assert first['pair_id'] == '1-3:001.Black_footed_Albatross'
    assert first['kps_ids'] == [2, 5]
    np.testing.assert_array_equal(first['src_kps'], [[10, 12], [20.5, 8]])
    assert first['src_bbox'] == [2.0, 3.0, 32.0, 28.0] and first['trg_imsize'] == (32, 32)
    assert dataset.metainfo['classes'] == fake_releases.CUB_CLASSES


def test_cub_seeded_selection(releases):
    root = releases['cub']['root']
    all_ids = [p['pair_id'] for p in releases['cub']['pairs']]
    ids = lambda **kw: [p['pair_id'] for p in data_list(CUBPairsDataset(root, **kw))]  # noqa
    four = ids(num_pairs=4)
    assert four == ids(num_pairs=4, seed=42) and len(set(four)) == 4
    assert set(four) <= set(all_ids)
    order = np.random.default_rng(42).permutation(len(all_ids))
    assert four == [all_ids[i] for i in order[:4]]
    assert sorted(ids(num_pairs=1000)) == sorted(all_ids)
    assert {tuple(ids(num_pairs=4, seed=s)) for s in range(6)} != {tuple(four)}
    assert ids(split='train', num_pairs=None) == []  # its two images are of two classes
    assert len(ids(split='all', num_pairs=None)) == 11  # + 1-2, 2-3, 2-4, 6-8, 7-8
    assert len(ids(num_pairs=None, min_kps=2)) == 3
    lazy = CUBPairsDataset(root, num_pairs=2, lazy_init=True)
    lazy.full_init()
    assert [p['pair_id'] for p in data_list(lazy)] == four[:2]


# ------------------------------------------------------------------------------ errors
def test_missing_folder_error(tmp_path):
    with pytest.raises(CorrespondenceDataError) as info:
        SPair71kDataset(data_root=str(tmp_path / 'nowhere'))
    message = str(info.value)
    assert 'PairAnnotation' in message and 'SPair-71k.tar.gz' in message
    assert '\n' not in message
    with pytest.raises(CorrespondenceDataError, match='CUB_200_2011.tgz'):
        CUBPairsDataset(data_root=str(tmp_path))
    with pytest.raises(CorrespondenceDataError, match='test_pairs_pf.csv'):
        PFWillowDataset(data_root=str(tmp_path))


def test_malformed_json_error(releases, tmp_path):
    root = str(tmp_path / 'SPair-71k')
    shutil.copytree(releases['spair']['root'], root)
    bad = sorted(os.listdir(osp.join(root, 'PairAnnotation', 'val')))[0]
    with open(osp.join(root, 'PairAnnotation', 'val', bad), 'w') as f:
        f.write('{"pair_id": 6, "src_kps": [[1, 2]')
    with pytest.raises(CorrespondenceDataError) as info:
        SPair71kDataset(data_root=root, split='val')
    assert bad in str(info.value) and 'JSON' in str(info.value)
    with open(osp.join(root, 'PairAnnotation', 'val', bad), 'w') as f:
        json.dump(dict(pair_id=6, category='aeroplane'), f)
    with pytest.raises(CorrespondenceDataError, match='missing'):
        SPair71kDataset(data_root=root, split='val')


def test_csv_wrong_columns_error(releases, tmp_path):
    willow = releases['willow']
    root = str(tmp_path / 'willow')
    shutil.copytree(willow['root'], root)
    csv_path = osp.join(root, 'test_pairs_pf.csv')
    with open(csv_path) as f:
        lines = f.read().splitlines()
    lines[2] = lines[2].rsplit(',', 1)[0]  # the second pair lost its last column
    with open(csv_path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    with pytest.raises(CorrespondenceDataError) as info:
        PFWillowDataset(data_root=root)
    message = str(info.value)
    assert 'test_pairs_pf.csv' in message and 'line 3 has 41' in message
    with open(csv_path, 'w') as f:
        f.write('imageA,imageB,XA1\nPF-dataset/a.png,PF-dataset/b.png,1\n')
    with pytest.raises(CorrespondenceDataError, match='42 columns'):
        PFWillowDataset(data_root=root)
    pascal = str(tmp_path / 'pascal')
    shutil.copytree(releases['pascal']['root'], pascal)
    with open(osp.join(pascal, 'test_pairs_pf_pascal.csv'), 'w') as f:
        f.write('source_image,target_image,class,XA,YA\n')
    with pytest.raises(CorrespondenceDataError, match=r"\['XB', 'YB'\] are missing"):
        PFPascalDataset(data_root=pascal)


def test_missing_image_error(releases, tmp_path):
    root = str(tmp_path / 'willow')
    shutil.copytree(releases['willow']['root'], root)
    os.remove(osp.join(root, 'PF-dataset', 'duck(S)', '060_0072.png'))
    with pytest.raises(CorrespondenceDataError, match=r'060_0072\.png'):
        PFWillowDataset(data_root=root)
