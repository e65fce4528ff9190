"""Native-resolution pixel features on disk, and pixel batches sampled from them for training.

ddpm-segmentation keeps ``[N, 8448, 256, 256]`` float32 features in RAM (~110 GB for 50 images,
~2x that at its peak). :class:`NativeFeatureStore` keeps each image's native maps instead: one
safetensors file per image in float16 (~50 MB for the 256-px ADM); :class:`PixelSampler` draws
training pixels and upsamples only them (``extractor.sample_pixels``), reading an image's maps
when a batch first needs them.

The one rule: a store holds features of ONE extractor setting. ``manifest.json`` records the
settings (and their digest); writing with other settings is refused, naming the setting. Each
image file is written atomically, so an existing file is complete: a re-run keeps it and computes
only the missing images.
"""
import collections
import hashlib
import json
import os
import os.path as osp

import numpy as np
import torch

from common.io.atomic import atomic_path, atomic_write_text
from common.progress import progress

from .extractor import PixelFeatureError, sample_pixels

MANIFEST = 'manifest.json'
FEATURES = 'features'
FORMAT_VERSION = 1
SUFFIX = '.safetensors'


def settings_digest(settings):
    """sha256 of a settings dict (JSON, sorted keys)."""
    text = json.dumps(settings, sort_keys=True, default=str, separators=(',', ':'))
    return hashlib.sha256(text.encode()).hexdigest()


def _as_json(value):
    return json.loads(json.dumps(value, default=str))


def _first_difference(old, new, prefix=''):
    """The dotted name of the first setting that differs, with both values."""
    if isinstance(old, dict) and isinstance(new, dict):
        for name in sorted(set(old) | set(new)):
            found = _first_difference(old.get(name), new.get(name), f'{prefix}{name}.')
            if found:
                return found
        return None
    return None if old == new else (prefix.rstrip('.'), old, new)


def _short(value, n=80):
    text = repr(value)
    return text if len(text) <= n else text[:n - 3] + '...'


class NativeFeatureStore:
    """A folder of per-image native feature maps (``FEATURES/<key>.safetensors``, float16).

    Args:
        root (str): the folder.
        settings (dict | None): the extractor's settings (``PixelFeatureExtractor.settings()``)
            to write with: checked against the manifest, which is written when absent. None opens
            an existing store for reading.
    """

    def __init__(self, root, settings=None):
        self.root = osp.abspath(osp.expanduser(root))
        self.manifest_path = osp.join(self.root, MANIFEST)
        if settings is None:
            if not osp.isfile(self.manifest_path):
                raise PixelFeatureError(
                    f'{self.manifest_path}: expected the manifest of a native feature store, but '
                    f'no such file exists. Point at the folder NativeFeatureStore.write filled, '
                    f'or write it first (NativeFeatureStore(root, extractor.settings()).write('
                    f'extractor, images)).')
            with open(self.manifest_path) as f:
                manifest = json.load(f)
            self.settings = manifest['settings']
        else:
            self.settings = _as_json(settings)
            self._check_or_write_manifest()
        self.digest = settings_digest(self.settings)

    # ------------------------------------------------------------------ manifest
    def _check_or_write_manifest(self):
        if osp.isfile(self.manifest_path):
            with open(self.manifest_path) as f:
                old = json.load(f).get('settings', {})
            diff = _first_difference(old, self.settings)
            if diff:
                name, was, now = diff
                raise PixelFeatureError(
                    f'{self.root} holds native features written with {name}={_short(was)}, but '
                    f'this run has {name}={_short(now)} (recorded in {self.manifest_path}). '
                    f'Features of different settings cannot be mixed: write into a new folder, '
                    f'or delete {self.root} to recompute everything with the new settings.')
            return
        os.makedirs(self.root, exist_ok=True)
        atomic_write_text(self.manifest_path, json.dumps(
            dict(format=FORMAT_VERSION, digest=settings_digest(self.settings),
                 settings=self.settings), indent=1, sort_keys=True) + '\n')

    # ------------------------------------------------------------------ files
    def path(self, key):
        """The file of image ``key`` (a relative path such as ``'train/0001'``)."""
        key = str(key)
        parts = key.replace('\\', '/').split('/')
        if not key or osp.isabs(key) or any(p in ('', '.', '..') for p in parts):
            raise PixelFeatureError(
                f'image key {key!r} is not a relative path without "." or ".." parts; use the '
                f'image\'s path relative to its image folder (e.g. "train/0001").')
        return osp.join(self.root, FEATURES, *parts) + SUFFIX

    def has(self, key):
        """True when ``key``'s file exists, is readable and was written with this store's
        settings."""
        path = self.path(key)
        if not osp.isfile(path):
            return False
        try:
            from safetensors import safe_open
            with safe_open(path, framework='pt') as f:
                return (f.metadata() or {}).get('settings_digest') == self.digest
        except Exception:  # noqa: BLE001 - unreadable: computed again
            return False

    def keys(self):
        """Every stored image key, sorted."""
        base = osp.join(self.root, FEATURES)
        found = []
        for folder, dirs, files in os.walk(base):
            dirs.sort()
            rel = osp.relpath(folder, base)
            for name in files:
                if name.endswith(SUFFIX) and not name.startswith('.'):
                    stem = name[:-len(SUFFIX)]
                    found.append(stem if rel == '.' else f'{rel}/{stem}'.replace(os.sep, '/'))
        return sorted(found)

    def __contains__(self, key):
        return osp.isfile(self.path(key))

    def __len__(self):
        return len(self.keys())

    def put(self, key, maps):
        """Write one image's native maps (a list of ``[C, h, w]`` or ``[1, C, h, w]``) in
        float16, atomically."""
        from safetensors.torch import save_file
        tensors = {}
        for i, m in enumerate(maps):
            m = m[0] if m.dim() == 4 and m.shape[0] == 1 else m
            if m.dim() != 3:
                raise PixelFeatureError(
                    f'NativeFeatureStore.put({key!r}): map {i} has shape {tuple(m.shape)}; '
                    f'expected one image\'s [C, h, w] maps (index the batch).')
            tensors[f'map.{i}'] = m.detach().to('cpu', torch.float16).contiguous()
        path = self.path(key)
        os.makedirs(osp.dirname(path), exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(tensors, tmp, metadata=dict(format='pt', key=str(key),
                                                   settings_digest=self.digest))
        return path

    def get(self, key, dtype=torch.float16):
        """Image ``key``'s native maps as a list of ``[1, C, h, w]`` (the batch of one image that
        ``sample_pixels`` takes), in the stored order."""
        path = self.path(key)
        if not osp.isfile(path):
            raise PixelFeatureError(
                f'{path}: expected the native features of image {key!r} in the store '
                f'{self.root}, but no such file exists ({len(self.keys())} images stored). '
                f'Write them with NativeFeatureStore.write(extractor, images).')
        from safetensors import safe_open
        with safe_open(path, framework='pt') as f:
            if (f.metadata() or {}).get('settings_digest') != self.digest:
                raise PixelFeatureError(
                    f'{path}: written with other settings than {self.manifest_path} records; '
                    f'delete the file and write the store again.')
            names = sorted(f.keys(), key=lambda n: int(n.split('.')[1]))
            return [f.get_tensor(n).to(dtype)[None] for n in names]

    # ------------------------------------------------------------------ writing
    def write(self, extractor, images, batch_size=1, show_progress=True):
        """Compute and store the native maps of ``images`` (an iterable of ``(key, image
        [3, S, S] in [-1, 1])``); images whose complete file exists are skipped (resumable).
        Returns the keys computed by this call."""
        settings = _as_json(extractor.settings())
        diff = _first_difference(self.settings, settings)
        if diff:
            name, was, now = diff
            raise PixelFeatureError(
                f'{self.root} holds native features written with {name}={_short(was)}, but '
                f'the extractor has {name}={_short(now)}. Write into a new folder, or open the '
                f'store with this extractor\'s settings.')
        todo = [(k, img) for k, img in images if not self.has(k)]
        batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
        shown = progress(batches, 'native features', len(batches)) if show_progress else batches
        written = []
        for batch in shown:
            maps = extractor.native(torch.stack([torch.as_tensor(img) for _, img in batch]))
            for n, (key, _) in enumerate(batch):
                self.put(key, [m[n] for m in maps])
                written.append(key)
        return written


# ---------------------------------------------------------------------------------- sampling
class PixelSampler:
    """Training batches ``(features [P, D] float32, labels [P] int64)`` of sampled pixels.

    Each epoch chooses pixels (never ``ignore_label``; masks are taken as given, so apply the
    reference's "< 20 pixels -> ignore" rule to them first), shuffles them over all images, and
    computes their upsampled features ``buffer_pixels`` at a time from the stored native maps;
    an image's maps are read on their first use (and kept, or at most ``cache_images`` of them).

    Args:
        store (NativeFeatureStore): the images' native maps.
        masks (dict): image key -> label map ``[S, S]`` (numpy or tensor, integer class ids).
        ignore_label (int): the label never sampled.
        pixels_per_image (int | None | 'all'): pixels drawn per image and epoch (uniformly,
            without replacement); None or 'all': every labelled pixel (the reference).
        class_balanced (bool): draw the epoch's pixels (``pixels_per_image`` x images, or all
            labelled pixels) in equal numbers per class, over the whole set (with replacement for
            classes with too few pixels).
        seed (int): the selection and shuffle of epoch ``e`` use ``seed + e``.
        batch_size (int): pixels per batch (the reference's 64).
        drop_last (bool): drop the last incomplete batch (as the reference's data loader).
        buffer_pixels (int): pixels whose features are computed together.
        cache_images (int | None): native maps kept in memory (None: all that were read).
    """

    def __init__(self, store, masks, ignore_label, pixels_per_image=None, class_balanced=False,
                 seed=0, batch_size=64, drop_last=True, buffer_pixels=16384, cache_images=None):
        self.store = store
        self.image_size = int(store.settings['image_size'])
        if pixels_per_image not in (None, 'all') and (
                isinstance(pixels_per_image, bool) or not isinstance(pixels_per_image, int)
                or pixels_per_image < 1):
            raise PixelFeatureError(
                f'PixelSampler pixels_per_image={pixels_per_image!r}: expected a positive int, '
                f"None or 'all' (every labelled pixel).")
        self.pixels_per_image = None if pixels_per_image == 'all' else pixels_per_image
        self.ignore_label = int(ignore_label)
        self.class_balanced = bool(class_balanced)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.drop_last = bool(drop_last)
        self.buffer_pixels = max(int(buffer_pixels), self.batch_size)
        self.cache_images = cache_images
        self.epoch = 0
        self.keys = sorted(masks)
        stored = set(store.keys())
        missing = [k for k in self.keys if k not in stored]
        if missing:
            raise PixelFeatureError(
                f'PixelSampler: {len(missing)} of {len(self.keys)} masked images have no native '
                f'features in {store.root} (first: {missing[0]!r}). Write them with '
                f'NativeFeatureStore.write(extractor, images) under the same keys as the masks.')
        s = self.image_size
        self.labels = []
        for key in self.keys:
            mask = torch.as_tensor(np.asarray(masks[key])).long()
            if tuple(mask.shape) != (s, s):
                raise PixelFeatureError(
                    f'PixelSampler: the mask of {key!r} has shape {tuple(mask.shape)}; expected '
                    f'[{s}, {s}] (the features\' image_size). Resize masks with nearest '
                    f'neighbour to {s}x{s}, as the images.')
            self.labels.append(mask.view(-1))
        self._table = torch.stack(self.labels)  # [N, S * S]
        self._valid = [(lab != self.ignore_label).nonzero().view(-1) for lab in self.labels]
        if not sum(len(v) for v in self._valid):
            raise PixelFeatureError(
                f'PixelSampler: every pixel of the {len(self.keys)} masks is ignore_label='
                f'{self.ignore_label}; nothing to train on. Check ignore_label and the masks.')
        self._cache = collections.OrderedDict()

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    # ------------------------------------------------------------------ selection
    def _select(self, gen):
        """``(image index [P], flat pixel index [P])`` of this epoch, shuffled."""
        images = [torch.full((len(v), ), i, dtype=torch.long) for i, v in enumerate(self._valid)]
        if not self.class_balanced:
            chosen_img, chosen_pix = [], []
            for img, valid in zip(images, self._valid):
                if self.pixels_per_image is not None and len(valid) > self.pixels_per_image:
                    pick = torch.randperm(len(valid), generator=gen)[:self.pixels_per_image]
                    img, valid = img[pick], valid[pick]
                chosen_img.append(img)
                chosen_pix.append(valid)
            img, pix = torch.cat(chosen_img), torch.cat(chosen_pix)
        else:
            all_img, all_pix = torch.cat(images), torch.cat(self._valid)
            all_lab = torch.cat([lab[v] for lab, v in zip(self.labels, self._valid)])
            total = len(all_pix) if self.pixels_per_image is None \
                else self.pixels_per_image * len(self.keys)
            classes = all_lab.unique()
            share = max(total // len(classes), 1)
            picks = []
            for c in classes.tolist():
                members = (all_lab == c).nonzero().view(-1)
                if len(members) >= share:
                    picks.append(members[torch.randperm(len(members), generator=gen)[:share]])
                else:
                    picks.append(members[torch.randint(len(members), (share, ), generator=gen)])
            pick = torch.cat(picks)
            img, pix = all_img[pick], all_pix[pick]
        order = torch.randperm(len(pix), generator=gen)
        return img[order], pix[order]

    def __len__(self):
        if self.class_balanced or self.pixels_per_image is not None:
            if self.class_balanced:
                n_cls = len(torch.cat([lab[v] for lab, v in zip(self.labels, self._valid)])
                            .unique())
                total = sum(len(v) for v in self._valid) if self.pixels_per_image is None \
                    else self.pixels_per_image * len(self.keys)
                n = max(total // n_cls, 1) * n_cls
            else:
                n = sum(min(len(v), self.pixels_per_image) for v in self._valid)
        else:
            n = sum(len(v) for v in self._valid)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    # ------------------------------------------------------------------ features
    def _maps(self, index):
        key = self.keys[index]
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        maps = self.store.get(key)
        self._cache[key] = maps
        if self.cache_images is not None:
            while len(self._cache) > max(int(self.cache_images), 1):
                self._cache.popitem(last=False)
        return maps

    def _features(self, img, pix):
        s = self.image_size
        feats = None
        for i in img.unique().tolist():
            sel = (img == i).nonzero().view(-1)
            vals = sample_pixels(self._maps(i), pix[sel] // s, pix[sel] % s, s, 0)
            if feats is None:
                feats = torch.empty(len(pix), vals.shape[1], dtype=torch.float32)
            feats[sel] = vals
        return feats

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        img, pix = self._select(gen)
        self.epoch += 1
        n = len(pix)
        end = n - n % self.batch_size if self.drop_last else n
        for w0 in range(0, end, self.buffer_pixels):
            w1 = min(w0 + self.buffer_pixels, end)
            w_img, w_pix = img[w0:w1], pix[w0:w1]
            feats = self._features(w_img, w_pix)
            labels = self._table[w_img, w_pix]
            for b0 in range(0, w1 - w0, self.batch_size):
                yield feats[b0:b0 + self.batch_size], labels[b0:b0 + self.batch_size]


# ---------------------------------------------------------------------------------- memory
def memory_report(n_images, native_shapes, image_size=256, buffer_pixels=16384,
                  cache_images=None):
    """Bytes of the reference's in-RAM training layout vs this store + sampler.

    Reference (``train_interpreter.py::prepare_data``): ``X`` float32 ``[N, D, S, S]``, labels
    uint8 ``[N, S, S]``; its permute/reshape/boolean-index copies make the peak about twice
    ``X``. Ours: the cached native maps in float16, one image's maps converted to float32 while
    sampling, the feature buffer ``[buffer_pixels, D]`` float32 and the masks as int64.

    Args:
        n_images (int): training images N.
        native_shapes (list[tuple]): ``(C, h, w)`` of the native maps (``extractor.native_shapes``).
        image_size (int): S.
        buffer_pixels (int), cache_images (int | None): the sampler's settings.
    Returns:
        dict of byte counts and ``ratio`` = reference peak / our peak.
    """
    n, s = int(n_images), int(image_size)
    dim = sum(int(c) for c, _, _ in native_shapes)
    native = sum(int(c) * int(h) * int(w) for c, h, w in native_shapes)
    reference_features = n * dim * s * s * 4
    reference_labels = n * s * s
    reference_peak = 2 * reference_features + reference_labels
    cached = n if cache_images is None else min(int(cache_images), n)
    ours = dict(native_cache=cached * native * 2, native_float32=native * 4,
                buffer=int(buffer_pixels) * dim * 4, masks=n * s * s * 8)
    ours_peak = sum(ours.values())
    return dict(n_images=n, dim=dim, image_size=s, reference_features=reference_features,
                reference_labels=reference_labels, reference_peak=reference_peak,
                store_disk=n * native * 2, **{f'ours_{k}': v for k, v in ours.items()},
                ours_peak=ours_peak, ratio=reference_peak / ours_peak)
