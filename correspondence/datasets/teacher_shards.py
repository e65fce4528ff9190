"""Teacher features of a large image set, precomputed once into checksummed safetensors shards.

The one rule: an image's features are stored under its path RELATIVE to the image root (never its
basename, which collides across folders, as DistillDIFT's HDF5 cache keys do), in the frame the
training pipeline uses, and a shard counts only when complete: each shard file is written
atomically, then its JSON (image keys in order, feature shapes, dtype, sha256), so an interrupted
run leaves whole shards and a re-run with the same settings continues where it stopped.

Layout of ``OUT``::

    OUT/manifest.json                      settings + image list digest, written when all is done
    OUT/rank000/settings.json              the settings this rank runs with (checked on re-runs)
    OUT/rank000/shard-000000.safetensors   'features.{i}' [C, h, w] (+ 'embeddings' [n, D])
    OUT/rank000/shard-000000.json          keys, shapes, dtype, sha256, bytes of that shard

With ``world_size`` ranks, rank ``r`` takes images ``i`` with ``i % world_size == r`` of the image
list and writes only under ``rank{r:03d}/``. A re-run whose settings (teacher config digest,
embedder digest, frame, size, dtype, image list digest, world size) differ from what ``OUT``
holds is refused with the differing setting named. :class:`TeacherShards` reads the folder
lazily (one ``safe_open`` per shard, on first use, after checking its sha256), so a DDP rank
only touches the shards of the samples its sampler gives it; :class:`LoadTeacherFeatures` puts
the features into a pair dict as ``src_teacher`` / ``trg_teacher`` (float32 ``[C, h, w]``).

The generic machinery lives in :mod:`common.io.feature_shards` (shared with segmentation's SAE
features); this module gives it the correspondence words and adds the image loading.
"""
import os.path as osp

import torch
from mmengine.registry import TRANSFORMS

from common.io import feature_shards as _fs
from common.io.feature_shards import (FORMAT_VERSION, IMAGE_EXTENSIONS, MANIFEST,
                                      SETTINGS, SHARD_DTYPES, ShardKind, config_digest,
                                      file_sha256, list_digest, shard_infos)
from .base import CorrespondenceDataError

TOOL = 'tools/precompute_teacher_features.py'
__all__ = ['FORMAT_VERSION', 'IMAGE_EXTENSIONS', 'MANIFEST', 'SETTINGS', 'SHARD_DTYPES', 'TOOL',
           'KIND', 'TeacherShardError', 'config_digest', 'list_digest', 'file_sha256',
           'list_images', 'check_settings', 'ShardWriter', 'shard_infos', 'write_manifest',
           'write_shards', 'load_frame', 'make_compute', 'TeacherShards', 'LoadTeacherFeatures']


class TeacherShardError(CorrespondenceDataError, _fs.FeatureShardError):
    """A shard folder is missing, incomplete, corrupt or was written with other settings."""


# The generic shards (common/io/feature_shards.py) in this subtree's words.
KIND = ShardKind(error=TeacherShardError, noun='teacher features', adjective='teacher-feature',
                 tool=TOOL, images_fix='set precompute.image_root in the config or pass '
                 '--images DIR',
                 extensions_fix='set precompute.extensions to the files\' extensions')


def list_images(image_root, extensions=IMAGE_EXTENSIONS, num_images=None, seed=0):
    """The images under ``image_root`` (recursively) as sorted POSIX paths relative to it;
    ``num_images``: a seeded random subset of that many (kept in sorted order)."""
    return _fs.list_images(image_root, extensions, num_images, seed, kind=KIND)


def check_settings(out, settings):
    """Refuse ``settings`` when ``OUT``'s manifest or any rank's settings file differs."""
    return _fs.check_settings(out, settings, KIND)


class ShardWriter(_fs.FeatureShardWriter):
    """:class:`common.io.feature_shards.FeatureShardWriter` raising :class:`TeacherShardError`."""

    kind = KIND


def write_manifest(out, keys, settings, info=None):
    """Write ``OUT/manifest.json`` once every image of ``keys`` is in a complete shard."""
    return _fs.write_manifest(out, keys, settings, info, KIND)


def write_shards(out, keys, compute, settings, rank=0, world_size=1, shard_size=256,
                 dtype='float16', batch_size=1, barrier=None, finalize=True, info=None,
                 show_progress=True):
    """:func:`common.io.feature_shards.write_shards` with this subtree's :class:`ShardWriter`
    (``settings``: teacher/embedder digests, frame, size, image root, ...)."""
    return _fs.write_shards(out, keys, compute, settings, rank, world_size, shard_size, dtype,
                            batch_size, barrier, finalize, info, show_progress, kind=KIND,
                            writer_cls=ShardWriter)


def load_frame(path, frame, size, resample='bilinear'):
    """The image at ``path`` in the frame exactly as :class:`ResizePair` draws it, as float
    ``[3, H, W]`` in ``[0, 1]``."""
    from ..geometry import frame_transform
    from .transforms import load_rgb, resize_to_frame
    image = load_rgb(path)
    h, w = image.shape[:2]
    transform = frame_transform((w, h), frame, size)
    image = resize_to_frame(image, transform, frame, resample)
    return torch.from_numpy(image.transpose(2, 0, 1).copy()).float() / 255


def make_compute(teacher, image_root, frame, size, embedder=None, resample='bilinear',
                 device='cpu', categories=None):
    """``compute(batch_keys) -> (features [B, C, h, w], embeddings [B, D] | None)`` for
    :func:`write_shards`: each image loaded and drawn into the frame as :class:`ResizePair` does,
    then ``teacher(images, categories=...)`` and ``embedder(images)``.

    ``categories``: None (the extractor's own prompt) or ``'folder'`` (the first folder under
    the image root, for a prompt template such as ``'a photo of a {category}'``).
    """
    if categories not in (None, 'folder'):
        raise TeacherShardError(f"categories={categories!r}: use None or 'folder'.")

    @torch.no_grad()
    def compute(keys):
        images = [load_frame(osp.join(image_root, k), frame, size, resample) for k in keys]
        cats = [k.split('/', 1)[0] if '/' in k else '' for k in keys] \
            if categories == 'folder' else None
        if len({tuple(i.shape) for i in images}) > 1:  # 'original' frames: one at a time
            parts = [compute([k]) for k in keys]
            return (torch.cat([p[0] for p in parts]),
                    None if embedder is None else torch.cat([p[1] for p in parts]))
        batch = torch.stack(images).to(device)
        feats = teacher(batch, categories=cats).float().cpu()
        embs = None if embedder is None else embedder(batch).float().cpu()
        return feats, embs

    return compute


# ------------------------------------------------------------------------------------- reader
class TeacherShards(_fs.FeatureShards):
    """Read a folder written by :func:`write_shards` (``tools/precompute_teacher_features.py``).

    ``keys()``, ``key in shards``, ``get(key) -> float32 [C, h, w]``, ``embeddings() -> (keys,
    float32 [N, D])``, ``settings`` (the manifest's); see
    :class:`common.io.feature_shards.FeatureShards`.

    Args:
        root (str): the folder.
        verify (str): ``'sha256'`` (default) or ``'size'`` (see ``FeatureShards``).
    """

    kind = KIND

    def __init__(self, root, verify='sha256'):
        super().__init__(root, verify=verify)

    def _require_embeddings(self):
        if any(info.get('embedding_dim') is None for info in self._infos.values()):
            raise TeacherShardError(
                f'{self.root}: expected teacher shards with an embedding per image (for retrieval '
                f'pairing), but they were written without one. Add an `embedder` (e.g. '
                f"dict(type='DINOv2ClsEmbedder', pretrained=...)) to the precompute config and "
                f'write a new shard folder, or use pairing=\'random\' / \'same_category\'.')


# ----------------------------------------------------------------------------------- transform
@TRANSFORMS.register_module()
class LoadTeacherFeatures:
    """Pipeline step: ``results['{side}_teacher'] = shards.get(results['{side}_teacher_key'])``.

    Args:
        shards (str | TeacherShards): the folder written by ``tools/precompute_teacher_features.py``
            (opened lazily, on the first pair).
        keys (tuple): the sides to load (``('src', 'trg')``).
        verify (str): :class:`TeacherShards`' check on a shard's first open (``'sha256'`` or
            ``'size'``).
    """

    def __init__(self, shards, keys=('src', 'trg'), verify='sha256'):
        self._shards = shards if isinstance(shards, TeacherShards) else None
        self.root = shards.root if isinstance(shards, TeacherShards) else shards
        self.keys = tuple(keys)
        self.verify = verify

    @property
    def shards(self):
        if self._shards is None:
            self._shards = TeacherShards(self.root, verify=self.verify)
        return self._shards

    def __call__(self, results):
        return self.transform(results)

    def transform(self, results):
        for side in self.keys:
            name = f'{side}_teacher_key'
            if name not in results:
                raise KeyError(
                    f'LoadTeacherFeatures needs {name!r} in the pair dict (the image\'s path '
                    f'relative to the image root of the shard folder {self.root}; '
                    f'UnlabeledPairsDataset gives it); got keys {sorted(results)}.')
            results[f'{side}_teacher'] = self.shards.get(results[name])
        return results

    def __repr__(self):
        return f'{type(self).__name__}(shards={self.root!r}, keys={self.keys!r})'
