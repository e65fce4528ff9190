"""Per-image features of a large image set, written once into checksummed safetensors shards.

The one rule: an image's features are stored under its KEY (its path relative to the image root,
never its basename, which collides across folders), and a shard counts only when complete: each
shard file is written atomically, then its JSON (keys in order, feature shapes, dtype, sha256), so
an interrupted run leaves whole shards and a re-run with the same settings continues where it
stopped. A re-run with other settings into the same folder is refused, naming the setting.

Layout of ``OUT``::

    OUT/manifest.json                      settings + image list digest, written when all is done
    OUT/rank000/settings.json              the settings this rank runs with (checked on re-runs)
    OUT/rank000/shard-000000.safetensors   'features.{i}' [C, h, w] (+ 'embeddings' [n, D])
    OUT/rank000/shard-000000.json          keys, shapes, dtype, sha256, bytes of that shard

With ``world_size`` ranks, rank ``r`` takes images ``i`` with ``i % world_size == r`` of the image
list and writes only under ``rank{r:03d}/``. :class:`FeatureShards` reads the folder lazily (one
``safe_open`` per shard, on first use, after checking its sha256), so a DDP rank only touches the
shards of the samples it is given.

Several subtrees use this (correspondence's teacher features, segmentation's SAE training
features); each names its own error class, noun and tool through a :class:`ShardKind`, so its
messages speak its language (``correspondence/datasets/teacher_shards.py``).
"""
import glob
import hashlib
import json
import os
import os.path as osp
from typing import NamedTuple

import torch

from .atomic import atomic_path, atomic_write_text
from ..progress import progress  # noqa: F401  (re-exported)

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')
SHARD_DTYPES = dict(float16=torch.float16, float32=torch.float32)
MANIFEST = 'manifest.json'
SETTINGS = 'settings.json'
FORMAT_VERSION = 1


class FeatureShardError(ValueError):
    """A shard folder is missing, incomplete, corrupt or was written with other settings."""


class ShardKind(NamedTuple):
    """How a subtree's shard folders are named in messages.

    ``error``: the exception class raised; ``noun``: what the shards hold (``'features'``,
    ``'teacher features'``); ``adjective``: its compound form (``'feature'``,
    ``'teacher-feature'``); ``tool``: the command that writes such folders; ``images_fix``: how to
    point the writer at another image folder.
    """
    error: type = FeatureShardError
    noun: str = 'features'
    adjective: str = 'feature'
    tool: str = 'the tool that wrote it'
    images_fix: str = 'pass --images DIR'
    extensions_fix: str = 'give the files\' extensions'


GENERIC = ShardKind()




# ------------------------------------------------------------------------------------ helpers
def config_digest(cfg):
    """sha256 (hex) of a config dict (a model config), independent of key order."""
    if cfg is None:
        return None
    if hasattr(cfg, 'to_dict'):
        cfg = cfg.to_dict()
    text = json.dumps(cfg, sort_keys=True, default=str, separators=(',', ':'))
    return hashlib.sha256(text.encode()).hexdigest()


def list_digest(keys):
    """sha256 (hex) of an ordered image list."""
    return hashlib.sha256('\n'.join(keys).encode()).hexdigest()


def file_sha256(path, chunk=1 << 22):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def list_images(image_root, extensions=IMAGE_EXTENSIONS, num_images=None, seed=0, kind=GENERIC):
    """The images under ``image_root`` (recursively) as sorted POSIX paths relative to it;
    ``num_images``: a seeded random subset of that many (kept in sorted order)."""
    root = osp.abspath(osp.expanduser(image_root))
    if not osp.isdir(root):
        raise kind.error(
            f'{root}: expected a folder of images (image_root), but no such folder exists. '
            f'{kind.images_fix[0].upper()}{kind.images_fix[1:]}.')
    exts = tuple(e.lower() if e.startswith('.') else '.' + e.lower() for e in extensions)
    keys = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        rel = osp.relpath(folder, root)
        for name in files:
            if name.lower().endswith(exts) and not name.startswith('.'):
                keys.append(name if rel == '.' else f'{rel}/{name}'.replace(os.sep, '/'))
    keys.sort()
    if not keys:
        raise kind.error(
            f'{root}: expected images with extensions {exts} (searched recursively), found none. '
            f'Check the image folder, or {kind.extensions_fix}.')
    if num_images is not None and num_images < len(keys):
        import numpy as np
        chosen = np.random.default_rng(seed).choice(len(keys), int(num_images), replace=False)
        keys = [keys[i] for i in sorted(chosen)]
    return keys


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _write_json(path, data):
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + '\n')


def _rank_dir(out, rank):
    return osp.join(out, f'rank{rank:03d}')


def check_settings(out, settings, kind=GENERIC):
    """Refuse ``settings`` when ``OUT``'s manifest or any rank's settings file differs."""
    settings = json.loads(json.dumps(settings, default=str))
    found = [p for p in [osp.join(out, MANIFEST)] +
             sorted(glob.glob(osp.join(out, 'rank[0-9][0-9][0-9]', SETTINGS))) if osp.isfile(p)]
    for path in found:
        old = _read_json(path).get('settings', {})
        for name in sorted(set(old) | set(settings)):
            if old.get(name) != settings.get(name):
                raise kind.error(
                    f'{out} holds {kind.noun} written with {name}={old.get(name)!r} '
                    f'(recorded in {path}), but this run has {name}={settings.get(name)!r}. '
                    f'Shards of different settings cannot be mixed: write into a new output '
                    f'folder, or delete {out} to recompute everything with the new settings.')


# ------------------------------------------------------------------------------------- writer
class FeatureShardWriter:
    """Collect ``(key, features [C, h, w], embedding [D] | None)`` and write complete shards.

    On construction the rank folder is scanned: shards with their JSON and a file of the recorded
    size are complete (their keys are :attr:`done`); a shard file without JSON (a crash between
    the two writes) or a JSON whose shard file is missing or of another size (deleted, truncated)
    is removed, so its images are computed again into a new shard. Use it as a context manager:
    the last, partial shard is written on a clean exit only.

    Args:
        out (str): the output folder.
        settings (dict): what the features depend on (see :func:`write_shards`); checked against
            what ``out`` holds.
        rank (int): this process' rank; writes under ``out/rank{rank:03d}``.
        shard_size (int): images per shard.
        dtype (str): ``'float16'`` (default) or ``'float32'``.
        kind (ShardKind): error class and words of the messages.
    """

    kind = GENERIC

    def __init__(self, out, settings, rank=0, shard_size=256, dtype='float16', kind=None):
        if kind is not None:
            self.kind = kind
        name = type(self).__name__
        if dtype not in SHARD_DTYPES:
            raise self.kind.error(
                f'{name}: dtype={dtype!r} is not one of {tuple(SHARD_DTYPES)}; use '
                f'float16 (half the disk) or float32.')
        if shard_size < 1:
            raise self.kind.error(f'{name}: shard_size={shard_size} must be at least 1.')
        self.out = osp.abspath(out)
        # as JSON stores them (tuples become lists), so a re-run compares equal
        self.settings = json.loads(json.dumps(dict(settings, dtype=dtype), default=str))
        self.rank = int(rank)
        self.shard_size = int(shard_size)
        self.dtype = dtype
        self.folder = _rank_dir(self.out, self.rank)
        check_settings(self.out, self.settings, self.kind)
        os.makedirs(self.folder, exist_ok=True)
        _write_json(osp.join(self.folder, SETTINGS),
                    dict(format=FORMAT_VERSION, rank=self.rank, settings=self.settings))
        self.done = set()
        self.next_index = 0
        self._scan()
        self._buffer = []
        self.written = []  # shard files written by this writer

    def _scan(self):
        indices = []
        for path in sorted(glob.glob(osp.join(self.folder, 'shard-*.json'))):
            shard = path[:-len('.json')] + '.safetensors'
            info = _read_json(path)
            if not osp.isfile(shard) or osp.getsize(shard) != info.get('bytes'):
                os.remove(path)  # its images are computed again
                if osp.isfile(shard):
                    os.remove(shard)
                continue
            self.done.update(info['keys'])
            indices.append(int(osp.basename(path)[len('shard-'):-len('.json')]))
        for shard in glob.glob(osp.join(self.folder, 'shard-*.safetensors')):
            if not osp.isfile(shard[:-len('.safetensors')] + '.json'):
                os.remove(shard)  # written, but its JSON never was: incomplete
        self.next_index = max(indices) + 1 if indices else 0

    def add(self, key, features, embedding=None):
        """Queue one image's features; a full queue is written as a shard."""
        if features.dim() != 3:
            raise self.kind.error(
                f'{type(self).__name__}.add({key!r}): expected features [C, h, w], got shape '
                f'{tuple(features.shape)}. Pass one image\'s features (index the batch).')
        self._buffer.append((key, features, embedding))
        if len(self._buffer) >= self.shard_size:
            self.flush()

    def flush(self):
        """Write the queued images as one shard (safetensors, then its JSON; both atomic)."""
        if not self._buffer:
            return None
        from safetensors.torch import save_file
        dtype = SHARD_DTYPES[self.dtype]
        tensors = {f'features.{i}': f.detach().to('cpu', dtype).contiguous()
                   for i, (_, f, _) in enumerate(self._buffer)}
        embeddings = [e for _, _, e in self._buffer]
        has_emb = embeddings[0] is not None
        if any((e is not None) != has_emb for e in embeddings):
            raise self.kind.error(
                f'{type(self).__name__}: give an embedding for every image or for none.')
        if has_emb:
            tensors['embeddings'] = torch.stack(
                [e.detach().reshape(-1).to('cpu', torch.float32) for e in embeddings])
        name = f'shard-{self.next_index:06d}'
        shard = osp.join(self.folder, name + '.safetensors')
        with atomic_path(shard) as tmp:
            save_file(tensors, tmp, metadata=dict(format='pt'))
        info = dict(format=FORMAT_VERSION, keys=[k for k, _, _ in self._buffer],
                    shapes=[list(f.shape) for _, f, _ in self._buffer], dtype=self.dtype,
                    embedding_dim=int(tensors['embeddings'].shape[1]) if has_emb else None,
                    sha256=file_sha256(shard), bytes=osp.getsize(shard))
        _write_json(osp.join(self.folder, name + '.json'), info)
        self.done.update(info['keys'])
        self.written.append(shard)
        self.next_index += 1
        self._buffer = []
        return shard

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.flush()
        self._buffer = []  # an error: the partial shard is dropped, complete ones stay
        return False


def shard_infos(out):
    """``[(shard path, its JSON dict), ...]`` of every complete shard of every rank."""
    infos = []
    for path in sorted(glob.glob(osp.join(out, 'rank[0-9][0-9][0-9]', 'shard-*.json'))):
        infos.append((path[:-len('.json')] + '.safetensors', _read_json(path)))
    return infos


def write_manifest(out, keys, settings, info=None, kind=GENERIC):
    """Write ``OUT/manifest.json`` once every image of ``keys`` is in a complete shard.

    ``info``: recorded, never compared (e.g. ``image_root``: the images may move)."""
    out = osp.abspath(out)
    covered, shards = set(), []
    for shard, shard_info in shard_infos(out):
        covered.update(shard_info['keys'])
        shards.append(osp.relpath(shard, out))
    missing = [k for k in keys if k not in covered]
    if missing:
        raise kind.error(
            f'{out}: {len(missing)} of {len(keys)} images have no {kind.noun} yet (first: '
            f'{missing[0]!r}); the manifest is written once every rank has finished. Run the '
            f'missing ranks (same settings, same world size), then this one again.')
    _write_json(osp.join(out, MANIFEST),
                dict(format=FORMAT_VERSION, settings=settings, num_images=len(keys),
                     shards=shards, complete=True, **(info or {})))


def write_shards(out, keys, compute, settings, rank=0, world_size=1, shard_size=256,
                 dtype='float16', batch_size=1, barrier=None, finalize=True, info=None,
                 show_progress=True, kind=GENERIC, writer_cls=FeatureShardWriter):
    """Compute and write this rank's part of ``keys``; skip images already in complete shards.

    Args:
        out (str): the output folder.
        keys (list[str]): the whole image list (every rank's), image-root-relative paths.
        compute (callable): ``compute(batch_keys) -> (features [B, C, h, w], embeddings [B, D]
            or None)``.
        settings (dict): what the features depend on (model digests, size, timestep, ...);
            ``images`` (the list digest), ``num_images``, ``world_size`` and ``dtype`` are added
            here.
        rank, world_size: this rank takes ``keys[i]`` with ``i % world_size == rank``.
        barrier (callable | None): called after this rank's last shard (``dist.barrier``); then
            rank 0 writes the manifest. Without it, rank 0 writes the manifest only when every
            other rank has finished already (else the kind's error).
        finalize (bool): let rank 0 write the manifest.
        info (dict | None): recorded in the manifest, not compared (``image_root``).
        show_progress (bool): a progress bar (on a terminal); tools show rank 0's only.
        kind (ShardKind): error class and words of the messages.
    Returns:
        the writer (``written``: the shard files written by this call; ``done``: every key of
        this rank in complete shards).
    """
    if not 0 <= rank < world_size:
        raise kind.error(f'write_shards: rank={rank} is outside world_size={world_size}.')
    settings = dict(settings, images=list_digest(keys), num_images=len(keys),
                    world_size=int(world_size))
    writer = writer_cls(out, settings, rank=rank, shard_size=shard_size, dtype=dtype, kind=kind)
    mine = [k for i, k in enumerate(keys) if i % world_size == rank and k not in writer.done]
    batches = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
    with writer:
        shown = progress(batches, f'{kind.noun} (rank {rank})', len(batches)) \
            if show_progress else batches
        for batch in shown:
            feats, embs = compute(batch)
            for n, key in enumerate(batch):
                writer.add(key, feats[n], None if embs is None else embs[n])
    if barrier is not None:
        barrier()
    if finalize and rank == 0:
        write_manifest(out, keys, writer.settings, info, kind)
    return writer


# ------------------------------------------------------------------------------------- reader
class FeatureShards:
    """Read a folder written by :func:`write_shards`.

    ``keys()``, ``key in shards``, ``get(key) -> float32 [C, h, w]``, ``embeddings() -> (keys,
    float32 [N, D])``, ``settings`` (the manifest's). Only the small JSON files are read on
    construction; a shard is checked and opened on its first use. Picklable (data loader
    workers reopen the shards they need).

    Args:
        root (str): the folder.
        verify (str): ``'sha256'`` (default): a shard's checksum is verified on its first open,
            in each process; ``'size'``: only its byte count (a truncated shard), for very large
            sets where hashing each shard once per worker costs too much.
        kind (ShardKind): error class and words of the messages.
    """

    kind = GENERIC

    def __init__(self, root, verify='sha256', kind=None):
        if kind is not None:
            self.kind = kind
        if verify not in ('sha256', 'size'):
            raise self.kind.error(
                f"{type(self).__name__}: verify={verify!r}: use 'sha256' or 'size'.")
        self.verify = verify
        self.root = osp.abspath(osp.expanduser(root))
        manifest = osp.join(self.root, MANIFEST)
        if not osp.isfile(manifest):
            raise self.kind.error(
                f'{manifest}: expected the manifest of a {self.kind.adjective} folder, but no such'
                f' file exists. Either the folder is wrong or the run that writes it has not '
                f'finished: run {self.kind.tool} CONFIG --out {self.root} (it continues where it '
                f'stopped).')
        self.manifest = _read_json(manifest)
        self.settings = self.manifest.get('settings', {})
        self._index = {}  # key -> (shard path, position)
        self._infos = {}
        for shard, info in shard_infos(self.root):
            self._infos[shard] = info
            for pos, key in enumerate(info['keys']):
                self._index[key] = (shard, pos)
        self._keys = sorted(self._index)
        self._open = {}

    def __getstate__(self):
        state = dict(self.__dict__)
        state['_open'] = {}
        return state

    def keys(self):
        return list(self._keys)

    def __len__(self):
        return len(self._keys)

    def __contains__(self, key):
        return key in self._index

    def _handle(self, shard):
        handle = self._open.get(shard)
        if handle is None:
            from safetensors import safe_open
            info = self._infos[shard]
            what = f'{self.kind.adjective} shard'
            fix = (f'Delete {shard} (and its .json) and run {self.kind.tool} again with the same '
                   f'config and --out {self.root}: it recomputes just that shard\'s '
                   f'{len(info["keys"])} images.')
            if not osp.isfile(shard):
                raise self.kind.error(f'{shard}: expected a {what} listed by its'
                                      f' JSON, but no such file exists. {fix}')
            size = osp.getsize(shard)
            if size != info.get('bytes'):
                raise self.kind.error(
                    f'{shard}: expected a {what} of {info.get("bytes")} bytes, '
                    f'but the file has {size}: it is truncated or corrupt. {fix}')
            digest = file_sha256(shard) if self.verify == 'sha256' else info.get('sha256')
            if digest != info.get('sha256'):
                raise self.kind.error(
                    f'{shard}: expected a {what} with sha256 {info.get("sha256")}'
                    f', but the file has {digest} ({osp.getsize(shard)} bytes, '
                    f'{info.get("bytes")} written): it is corrupt or truncated. {fix}')
            handle = self._open[shard] = safe_open(shard, framework='pt')
        return handle

    def _missing(self, key):
        return self.kind.error(
            f'{key!r}: expected an image key (a path relative to the image root, e.g. '
            f'{self._keys[0] if self._keys else "train2017/0001.jpg"!r}) of the '
            f'{self.kind.adjective} folder {self.root}, which has no such key '
            f'({len(self._keys)} images). Compute the {self.kind.noun} of this image set with '
            f'{self.kind.tool}, or point the reader at the right shard folder.')

    def get(self, key):
        """The features of ``key`` as float32 ``[C, h, w]``."""
        if key not in self._index:
            raise self._missing(key)
        shard, pos = self._index[key]
        return self._handle(shard).get_tensor(f'features.{pos}').float()

    def embedding(self, key):
        if key not in self._index:
            raise self._missing(key)
        shard, pos = self._index[key]
        self._require_embeddings()
        return self._handle(shard).get_slice('embeddings')[pos:pos + 1][0].float()

    def _require_embeddings(self):
        if any(info.get('embedding_dim') is None for info in self._infos.values()):
            raise self.kind.error(
                f'{self.root}: expected shards with an embedding per image, but they were '
                f'written without one. Write them again with embeddings.')

    def has_embeddings(self):
        return bool(self._infos) and all(info.get('embedding_dim') is not None
                                         for info in self._infos.values())

    def embeddings(self):
        """``(keys, float32 [N, D])`` of every image, keys in :meth:`keys` order."""
        self._require_embeddings()
        rows = {}
        for shard, info in self._infos.items():
            emb = self._handle(shard).get_tensor('embeddings').float()
            for pos, key in enumerate(info['keys']):
                rows[key] = emb[pos]
        keys = self.keys()
        return keys, torch.stack([rows[k] for k in keys]) if keys else torch.zeros(0, 0)
