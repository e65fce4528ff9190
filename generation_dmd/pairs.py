"""The DMD pair dataset: (noise latent, class id, the teacher's image from that noise), written and read.

DMD v1's regression loss needs pairs ``(z, y_ref)``: ``y_ref`` is the teacher's deterministic EDM
sample (Heun, ``num_steps`` steps, float64 state) from the N(0, I) latent ``z`` with label ``c``.
:func:`build_pairs` makes them into checksummed safetensors shards through
``common.io.feature_shards`` (resumable, one folder per rank); :class:`DMDPairDataset` reads
them, and also the reference project's raw layout (``samples/{iid:06d}.npy`` +
``annotations.json``) and its HDF5 file (``/data/{iid}``, needs ``h5py``).

The one rule: a pair is defined by its SEED. The latent is ``pair_latents([seed], shape)``, one
``torch.Generator`` per seed, so it does not depend on the batch size, the rank or the device
count, and the stored latent is the unscaled float32 N(0, 1) noise (the sampler multiplies it by
``sigma_max``); the stored image is the float32 sampler output, not clipped to [-1, 1].
"""
import json
import os.path as osp

import torch

from common.io import feature_shards as _fs

# seed = (base_seed << BASE_SHIFT) | (class_id << CLASS_SHIFT) | index: distinct, positive int64
CLASS_SHIFT = 24
BASE_SHIFT = 48
MAX_INDEX = 1 << CLASS_SHIFT
MAX_CLASS = 1 << (BASE_SHIFT - CLASS_SHIFT)
MAX_BASE = 1 << (63 - BASE_SHIFT)


class DMDPairError(_fs.FeatureShardError):
    """A pair folder or file is missing, incomplete, corrupt or in a layout that cannot be read."""


KIND = _fs.ShardKind(error=DMDPairError, noun='DMD pairs', adjective='DMD-pair',
                     tool='tools/build_dmd_pairs.py', images_fix='pass another --out',
                     extensions_fix='check the folder')


# ---------------------------------------------------------------------------------- seeds/noise
def pair_seed(class_id, index, base_seed=0):
    """The seed of pair ``index`` of class ``class_id``: distinct for every (class, index).

    ``(base_seed << 48) | (class_id << 24) | index``, so class 3's pair 5 has seed
    ``3 * 2**24 + 5``. The reference (devrim's DMD) uses ``seeds = range(size_per_class)`` for
    every class, so the same 10k noise tensors appear under all 10 labels; here each class gets
    its own noise. ``index < 2**24``, ``class_id < 2**24``, ``0 <= base_seed < 2**15``.
    """
    for name, value, limit in (('class_id', class_id, MAX_CLASS), ('index', index, MAX_INDEX),
                               ('base_seed', base_seed, MAX_BASE)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
            raise DMDPairError(
                f'pair_seed: {name}={value!r} is not an integer in [0, {limit}); the seed packs '
                f'base_seed (15 bits), class_id (24 bits) and index (24 bits) into one int64. '
                f'Pass a non-negative integer below {limit}.')
    return (base_seed << BASE_SHIFT) | (class_id << CLASS_SHIFT) | index


def pair_latents(seeds, shape, device='cpu'):
    """float32 N(0, 1) latents ``[len(seeds), *shape]``, row ``k`` drawn from its own
    ``torch.Generator`` seeded with ``seeds[k]`` (on the CPU, so every device gives the same)."""
    shape = tuple(int(s) for s in shape)
    rows = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s)))
            for s in seeds]
    if not rows:
        return torch.zeros((0, ) + shape, device=device)
    return torch.stack(rows).to(device)


def _label_dim(net):
    for name in ('label_dim', 'num_classes'):
        value = getattr(net, name, None)
        if value:
            return int(value)
    return 0


def sample_pairs(teacher, latents, class_ids, num_steps=18, **sampler_kwargs):
    """The teacher's EDM samples (float64) from ``latents`` with labels ``class_ids`` (one-hot
    when the teacher is class-conditional, ``None`` when it is not)."""
    from .sampling import edm_sampler
    label_dim = _label_dim(teacher)
    labels = None
    if label_dim:
        labels = torch.nn.functional.one_hot(
            torch.as_tensor(class_ids, dtype=torch.long), label_dim).to(latents.device,
                                                                        torch.float32)
    with torch.no_grad():
        return edm_sampler(teacher, latents, labels, num_steps=num_steps, **sampler_kwargs)


# ------------------------------------------------------------------------------------ writing
def instance_key(iid):
    return f'{int(iid):08d}'


class PairShardWriter(_fs.FeatureShardWriter):
    """The common shard writer, storing contiguous arrays per shard: ``images``, ``latents``
    (float32 ``[n, C, H, W]``), ``class_ids``, ``seeds``, ``instance_ids`` (int64 ``[n]``).

    ``add(key, item)`` takes ``item = stack([image, latent])`` ``[2, C, H, W]``; the class and
    the seed follow from the key (the instance id) and the settings."""

    kind = KIND

    def add(self, key, features, embedding=None):
        if features.dim() != 4 or features.shape[0] != 2:
            raise self.kind.error(
                f'PairShardWriter.add({key!r}): expected stack([image, latent]) [2, C, H, W], '
                f'got shape {tuple(features.shape)}.')
        self._buffer.append((key, features, None))
        if len(self._buffer) >= self.shard_size:
            self.flush()

    def flush(self):
        if not self._buffer:
            return None
        from safetensors.torch import save_file
        per_class, base = self.settings['per_class'], self.settings['base_seed']
        iids = [int(k) for k, _, _ in self._buffer]
        items = torch.stack([f.detach().to('cpu', torch.float32) for _, f, _ in self._buffer])
        tensors = dict(images=items[:, 0].contiguous(), latents=items[:, 1].contiguous(),
                       class_ids=torch.tensor([i // per_class for i in iids]),
                       seeds=torch.tensor([pair_seed(i // per_class, i % per_class, base)
                                           for i in iids]),
                       instance_ids=torch.tensor(iids))
        name = f'shard-{self.next_index:06d}'
        shard = osp.join(self.folder, name + '.safetensors')
        with _fs.atomic_path(shard) as tmp:
            save_file(tensors, tmp, metadata=dict(format='pt'))
        info = dict(format=_fs.FORMAT_VERSION, keys=[k for k, _, _ in self._buffer],
                    shapes=[list(items.shape[2:])] * len(iids), dtype='float32',
                    embedding_dim=None, sha256=_fs.file_sha256(shard),
                    bytes=osp.getsize(shard))
        _fs._write_json(osp.join(self.folder, name + '.json'), info)
        self.done.update(info['keys'])
        self.written.append(shard)
        self.next_index += 1
        self._buffer = []
        return shard


def build_pairs(teacher, out, num_classes, per_class, image_shape, batch_size=64, rank=0,
                world_size=1, num_steps=18, base_seed=0, shard_size=1024, device=None,
                barrier=None, finalize=True, teacher_info=None, show_progress=True,
                **sampler_kwargs):
    """Sample this rank's pairs with ``edm_sampler`` and write them as shards under ``out``.

    Pair ``iid = class_id * per_class + index`` (``index < per_class``) has seed
    ``pair_seed(class_id, index, base_seed)``; rank ``r`` takes the iids with
    ``iid % world_size == r``. A re-run continues: pairs in complete shards are skipped, a
    deleted or truncated shard is sampled again. ``teacher_info``: what identifies the teacher
    (e.g. its config), recorded in the settings so a re-run with another teacher is refused.
    Returns the writer (``written``: the shard files of this call).
    """
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise DMDPairError(
            f'build_pairs: image_shape={image_shape!r}; expected (channels, height, width) of '
            f'the teacher\'s images, e.g. (3, 32, 32) for CIFAR-10.')
    for name, value in (('num_classes', num_classes), ('per_class', per_class),
                        ('batch_size', batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DMDPairError(f'build_pairs: {name}={value!r}; expected a positive integer.')
    if per_class > MAX_INDEX or num_classes > MAX_CLASS:
        raise DMDPairError(f'build_pairs: per_class={per_class}, num_classes={num_classes}: '
                           f'each must be at most {MAX_INDEX} (24 bits of the seed).')
    label_dim = _label_dim(teacher)
    if label_dim and num_classes > label_dim:
        raise DMDPairError(
            f'build_pairs: num_classes={num_classes} but the teacher knows {label_dim} classes '
            f'(its label_dim/num_classes). Set pairs.num_classes to at most {label_dim}.')
    if device is None:
        try:
            device = next(teacher.parameters()).device
        except (AttributeError, StopIteration):
            device = torch.device('cpu')
    keys = [instance_key(i) for i in range(num_classes * per_class)]
    settings = dict(kind='dmd_pairs', num_classes=num_classes, per_class=per_class,
                    image_shape=list(image_shape), num_steps=num_steps, base_seed=base_seed,
                    sampler=json.loads(json.dumps(sampler_kwargs, default=str)),
                    teacher=_fs.config_digest(teacher_info))

    def compute(batch):
        iids = [int(k) for k in batch]
        cls = [i // per_class for i in iids]
        seeds = [pair_seed(c, i % per_class, base_seed) for c, i in zip(cls, iids)]
        latents = pair_latents(seeds, image_shape, device)
        images = sample_pairs(teacher, latents, cls, num_steps, **sampler_kwargs)
        return torch.stack([images.float(), latents], 1), None

    return _fs.write_shards(out, keys, compute, settings, rank, world_size, shard_size,
                            'float32', batch_size, barrier, finalize, None, show_progress,
                            kind=KIND, writer_cls=PairShardWriter)


# ------------------------------------------------------------------------------------ reading
class PairShards(_fs.FeatureShards):
    """A folder written by :func:`build_pairs`; ``get(key)`` returns the pair's dict."""

    kind = KIND

    def get(self, key):
        if key not in self._index:
            raise self._missing(key)
        shard, pos = self._index[key]
        handle = self._handle(shard)
        return {name: handle.get_slice(name)[pos:pos + 1][0]
                for name in ('images', 'latents', 'class_ids', 'seeds', 'instance_ids')}


def _h5py(path):
    try:
        import h5py
    except ImportError as err:
        raise DMDPairError(
            f'{path}: an HDF5 pair file (the reference\'s /data/{{iid}} layout) needs the h5py '
            f'package, which is not installed. Install it with `pip install h5py`, or convert '
            f'the pairs into a shard folder / the samples/*.npy layout.') from err
    return h5py


def _register(cls):
    from mmengine.registry import DATASETS
    return DATASETS.register_module()(cls)


@_register
class DMDPairDataset(torch.utils.data.Dataset):
    """DMD pairs as ``dict(latent, image, class_id, seed, instance_id)`` (tensors: float32
    ``[C, H, W]`` twice, then int64 scalars), in instance-id order.

    ``root`` is one of:

    * a shard folder of :func:`build_pairs` / ``tools/build_dmd_pairs.py`` (``manifest.json``);
    * the reference's raw layout: a folder with ``annotations.json`` (a list of records with
      ``class_idx``, ``seed``, ``iid`` and optionally ``pairs_path``, relative to the folder;
      default ``samples/{iid:06d}.npy``), each ``.npy`` holding ``stack([image, latent])``;
    * the reference's HDF5 file (``.hdf5`` / ``.h5``): ``/data/{iid}`` = ``stack([image,
      latent])`` with attributes ``class_idx`` and ``seed`` (needs ``pip install h5py``).

    Files are opened lazily in each data loader worker. Images are returned as stored
    (unclipped); clip them where the loss needs it.
    """

    def __init__(self, root, verify='sha256'):
        self.root = osp.abspath(osp.expanduser(str(root)))
        self._h5 = None
        if self.root.endswith(('.hdf5', '.h5')):
            if not osp.isfile(self.root):
                raise DMDPairError(f'{self.root}: expected an HDF5 pair file, but no such file '
                                   f'exists. Check the path.')
            h5py = _h5py(self.root)
            self.layout = 'hdf5'
            with h5py.File(self.root, 'r') as f:
                self._keys = sorted(f['data'].keys(), key=int)
        elif osp.isfile(osp.join(self.root, _fs.MANIFEST)):
            self.layout = 'shards'
            self._shards = PairShards(self.root, verify=verify)
            self._keys = self._shards.keys()
        elif osp.isfile(osp.join(self.root, 'annotations.json')):
            self.layout = 'raw'
            with open(osp.join(self.root, 'annotations.json')) as f:
                records = json.load(f)
            if isinstance(records, dict):
                records = records.get('annotations', records.get('pairs'))
            if not isinstance(records, list) or not all(
                    isinstance(r, dict) and {'class_idx', 'seed', 'iid'} <= set(r)
                    for r in records):
                raise DMDPairError(
                    f'{self.root}/annotations.json: expected a list of records with class_idx, '
                    f'seed and iid (the reference\'s layout), but it holds something else. '
                    f'Point root at the folder the reference\'s generator wrote.')
            self._records = sorted(records, key=lambda r: int(r['iid']))
            self._keys = [r['iid'] for r in self._records]
        else:
            raise DMDPairError(
                f'{self.root}: expected DMD pairs: a shard folder with manifest.json (written by '
                f'tools/build_dmd_pairs.py), a folder with annotations.json + samples/*.npy, or '
                f'an .hdf5 file, but found none of these. Check the path, or build the pairs '
                f'with tools/build_dmd_pairs.py CONFIG --out {self.root}.')

    def __getstate__(self):
        state = dict(self.__dict__)
        state['_h5'] = None
        return state

    def __len__(self):
        return len(self._keys)

    def __getitem__(self, idx):
        if self.layout == 'shards':
            d = self._shards.get(self._keys[idx])
            return dict(latent=d['latents'].float(), image=d['images'].float(),
                        class_id=d['class_ids'].long(), seed=d['seeds'].long(),
                        instance_id=d['instance_ids'].long())
        if self.layout == 'raw':
            import numpy as np
            rec = self._records[idx]
            iid = int(rec['iid'])
            path = osp.join(self.root, rec.get('pairs_path') or f'samples/{iid:06d}.npy')
            if not osp.isfile(path):
                raise DMDPairError(f'{path}: expected the pair file of iid {iid} listed in '
                                   f'annotations.json, but no such file exists. Restore it or '
                                   f'drop its record.')
            pair = np.load(path, allow_pickle=False)
            cls, seed = rec['class_idx'], rec['seed']
        else:
            if self._h5 is None:  # opened once per worker process
                self._h5 = _h5py(self.root).File(self.root, 'r')
            node = self._h5['data'][self._keys[idx]]
            pair, cls, seed, iid = node[()], node.attrs['class_idx'], node.attrs['seed'], \
                int(self._keys[idx])
        pair = torch.as_tensor(pair)
        if pair.dim() != 4 or pair.shape[0] != 2:
            raise DMDPairError(f'{self.root}: pair {iid} has shape {tuple(pair.shape)}; expected '
                               f'stack([image, latent]) of shape (2, C, H, W).')
        return dict(latent=pair[1].float(), image=pair[0].float(),
                    class_id=torch.tensor(int(cls)), seed=torch.tensor(int(seed)),
                    instance_id=torch.tensor(iid))
