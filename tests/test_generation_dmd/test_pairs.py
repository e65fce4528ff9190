"""The DMD pair dataset: seeds, latents, shards (resume, ranks), the reference layouts, the tool."""
import json
import os
import os.path as osp
import sys

import numpy as np
import pytest
import torch

from generation_dmd.pairs import (DMDPairDataset, DMDPairError, build_pairs, pair_latents,
                                  pair_seed)
from generation_dmd.sampling import edm_sampler

SHAPE = (3, 4, 4)


class Analytic(torch.nn.Module):
    """D(x; sigma) = (x + sigma^2 * m_c) / (1 + sigma^2): the exact denoiser of N(m_c, I)."""
    label_dim = 3

    def forward(self, x, sigma, class_labels=None):
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1)
        mean = (class_labels.to(x.dtype) @ torch.tensor([-1., 0.5, 2.], dtype=x.dtype))
        return (x + sigma ** 2 * mean.reshape(-1, 1, 1, 1)) / (1 + sigma ** 2)


def _build(out, **kw):
    args = dict(num_classes=3, per_class=4, image_shape=SHAPE, batch_size=3, num_steps=3,
                shard_size=4, show_progress=False)
    args.update(kw)
    return build_pairs(Analytic(), str(out), **args)


def test_seeds_are_distinct_across_classes_and_latents_reproduce():
    seeds = [pair_seed(c, i) for c in range(10) for i in range(100)]
    assert len(set(seeds)) == 1000
    assert pair_seed(3, 5) == 3 * 2 ** 24 + 5 and pair_seed(0, 0, base_seed=1) == 2 ** 48
    a = pair_latents([7, 8], SHAPE)
    assert torch.equal(a[1], torch.randn(SHAPE, generator=torch.Generator().manual_seed(8)))
    assert torch.equal(pair_latents([8], SHAPE)[0], a[1])  # independent of the batch
    assert not torch.equal(a[0], a[1])
    with pytest.raises(DMDPairError, match=r'index=16777216 is not an integer in \[0, 16777216\)'):
        pair_seed(0, 2 ** 24)


def test_stored_pairs_equal_the_sampler_recomputed(tmp_path):
    _build(tmp_path / 'p')
    ds = DMDPairDataset(tmp_path / 'p')
    assert len(ds) == 12
    item = ds[6]  # class 1, index 2
    assert int(item['class_id']) == 1 and int(item['instance_id']) == 6
    assert int(item['seed']) == pair_seed(1, 2)
    assert torch.equal(item['latent'], pair_latents([pair_seed(1, 2)], SHAPE)[0])
    labels = torch.nn.functional.one_hot(torch.tensor([1]), 3).float()
    ref = edm_sampler(Analytic(), item['latent'][None], labels, num_steps=3)[0].float()
    assert torch.equal(item['image'], ref)
    # the analytic ODE solution tends to the class mean (0.5) plus the shrunk noise
    assert item['image'].dtype == torch.float32 and item['latent'].dtype == torch.float32


def test_resume_recomputes_only_the_deleted_shard(tmp_path):
    out = tmp_path / 'p'
    first = _build(out)
    assert len(first.written) == 3
    shard = osp.join(out, 'rank000', 'shard-000001.safetensors')
    before = DMDPairDataset(out)[5]['image']
    os.remove(shard)
    again = _build(out)
    assert len(again.written) == 1  # only the 4 pairs of the deleted shard
    ds = DMDPairDataset(out)
    assert len(ds) == 12 and torch.equal(ds[5]['image'], before)
    with pytest.raises(DMDPairError, match='num_steps=3.*this run has num_steps=4'):
        _build(out, num_steps=4)


def test_two_ranks_cover_all_items(tmp_path):
    out = tmp_path / 'p'
    with pytest.raises(DMDPairError, match='4 of 9 images have no DMD pairs yet'):
        _build(out, per_class=3, world_size=2, rank=0)  # rank 1 has not run: no manifest
    rank1 = _build(out, per_class=3, world_size=2, rank=1)
    assert sorted(rank1.done) == ['00000001', '00000003', '00000005', '00000007']
    rank0 = _build(out, per_class=3, world_size=2, rank=0)  # now writes the manifest
    assert rank0.written == [] and len(rank0.done) == 5
    ds = DMDPairDataset(out)
    assert [int(ds[i]['instance_id']) for i in range(len(ds))] == list(range(9))
    assert [int(ds[i]['class_id']) for i in range(len(ds))] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    single = DMDPairDataset(_build(tmp_path / 'one', per_class=3).out)
    assert all(torch.equal(ds[i]['image'], single[i]['image']) for i in range(9))
    with pytest.raises(DMDPairError, match='num_classes=4 but the teacher knows 3 classes'):
        _build(tmp_path / 'x', num_classes=4)


def test_reference_raw_layout_reads_back(tmp_path):
    root = tmp_path / 'raw'
    (root / 'samples').mkdir(parents=True)
    records = []
    for iid in (1, 0):
        pair = np.stack([np.full(SHAPE, iid + 0.5), np.full(SHAPE, -iid - 0.25)])
        np.save(root / 'samples' / f'{iid:06d}.npy', pair)
        records.append(dict(pairs_path=f'samples/{iid:06d}.npy', class_idx=iid + 3,
                            seed=100 + iid, iid=iid))
    (root / 'annotations.json').write_text(json.dumps(records))
    ds = DMDPairDataset(str(root))
    assert len(ds) == 2
    item = ds[1]
    assert torch.equal(item['image'], torch.full(SHAPE, 1.5))
    assert torch.equal(item['latent'], torch.full(SHAPE, -1.25))
    assert (int(item['class_id']), int(item['seed']), int(item['instance_id'])) == (4, 101, 1)


def test_hdf5_without_h5py_and_bad_roots(tmp_path, monkeypatch):
    path = tmp_path / 'cifar.hdf5'
    path.write_bytes(b'')
    monkeypatch.setitem(sys.modules, 'h5py', None)
    with pytest.raises(DMDPairError, match=r'needs the h5py package.*`pip install h5py`'):
        DMDPairDataset(str(path))
    with pytest.raises(DMDPairError, match='expected DMD pairs: a shard folder'):
        DMDPairDataset(str(tmp_path))


def test_registered_in_root_datasets(tmp_path):
    from mmengine.registry import DATASETS
    _build(tmp_path / 'p', num_classes=1, per_class=2)
    ds = DATASETS.build(dict(type='DMDPairDataset', root=str(tmp_path / 'p')))
    assert len(ds) == 2


def test_tool_end_to_end(tmp_path, capsys):
    sys.path.insert(0, osp.join(osp.dirname(__file__), '..', '..', 'tools'))
    import build_dmd_pairs
    from generation_dmd.networks import EDMPrecond, save_edm
    torch.manual_seed(0)
    net = EDMPrecond(8, 3, label_dim=2, model_type='SongUNet', model_channels=16,
                     channel_mult=[1], num_blocks=1, attn_resolutions=[], dropout=0.0)
    save_edm(net, str(tmp_path / 'edm'))
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(f"teacher = dict(type='load_edm', folder={str(tmp_path / 'edm')!r})\n"
                   "pairs = dict(num_classes=2, per_class=5, image_shape=(3, 8, 8), num_steps=2)\n")
    out = str(tmp_path / 'out')
    build_dmd_pairs.main([str(cfg), '--out', out, '--per-class', '2', '--batch-size', '3'])
    assert '1 shard(s) written' in capsys.readouterr().out
    ds = DMDPairDataset(out)
    assert len(ds) == 4 and int(ds[3]['class_id']) == 1
    labels = torch.tensor([[0., 1.]])
    with torch.no_grad():
        ref = edm_sampler(net.eval(), ds[3]['latent'][None], labels, num_steps=2)[0].float()
    assert torch.allclose(ds[3]['image'], ref, atol=1e-6)
    code = build_dmd_pairs._cli.run_cli('p', build_dmd_pairs.main,
                                        [str(cfg), '--out', out, '--per-class', '2', '--cfg-options',
                                         'pairs.num_steps=3'])
    assert code == 1
    assert 'this run has num_steps=3' in capsys.readouterr().err
