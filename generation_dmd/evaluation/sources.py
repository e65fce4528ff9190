"""Image sources for reference statistics: image folders, uint8 arrays, CIFAR-10's python batches.

Reference FID statistics are the features of real images; this module reads those images in
uint8 batches ``[B, C, H, W]`` (what every extractor takes) from:

* a folder of PNG / JPEG / BMP / WebP files (searched recursively, sorted by relative path);
* a uint8 array (numpy or torch, or an ``.npy`` / ``.npz`` file): ``[N, H, W]``, ``[N, H, W,
  C]`` or ``[N, C, H, W]`` with ``C`` 1 or 3;
* the CIFAR-10 python folder ``cifar-10-batches-py`` (``data_batch_1..5``: the TRAIN set, the
  protocol's reference; ``test_batch`` with ``split='test'``, a proxy).

The one rule: CIFAR-10's batch files are Python PICKLES and are refused unless the caller
passes ``allow_pickle=True`` (``--allow-pickle``) for a file from the official CIFAR site; even
then they are read by a restricted unpickler that can only rebuild numpy arrays, never call
anything else. ``.npy`` / ``.npz`` files are read with ``allow_pickle=False``.
"""
import io
import os
import os.path as osp
import pickle
import warnings
import zipfile

import numpy as np
import torch

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp')
CIFAR_FILES = {'train': [f'data_batch_{i}' for i in range(1, 6)], 'test': ['test_batch']}
CIFAR_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz'


class ImageSourceError(ValueError):
    """An image source that cannot be read: missing, empty, wrong dtype or layout, a pickle."""


class PickleRefusedError(ImageSourceError):
    """CIFAR-10's python batches were asked for without ``allow_pickle=True``."""


def is_cifar_folder(path):
    return osp.isdir(path) and osp.isfile(osp.join(path, 'data_batch_1'))


def source_kind(source):
    """'array', 'cifar10-python', 'folder', 'npy' or 'npz' (raises for anything else)."""
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return 'array'
    path = os.fspath(source)
    if is_cifar_folder(path):
        return 'cifar10-python'
    if osp.isdir(path):
        return 'folder'
    if osp.isfile(path) and path.endswith(('.npy', '.npz')):
        return path[-3:]
    raise ImageSourceError(
        f'Image source {path!r} is not a folder of images, a cifar-10-batches-py folder or an '
        f'.npy / .npz file of uint8 images{"" if osp.exists(path) else " (it does not exist)"}. '
        f'Relative paths are resolved from {os.getcwd()!r}; pass one of those.')


def to_nchw_uint8(array, what='images'):
    """A uint8 image array in one of the accepted layouts → torch.uint8 ``[N, C, H, W]``."""
    a = array if isinstance(array, torch.Tensor) else torch.from_numpy(np.array(array))  # a copy
    if a.dtype != torch.uint8:
        raise ImageSourceError(
            f'{what}: dtype {a.dtype}; expected uint8 images (values 0..255, as saved to PNG). '
            f'Quantise float images in [-1, 1] with (x * 127.5 + 128).clip(0, 255) first.')
    if a.ndim == 3:
        return a[:, None]
    if a.ndim == 4 and a.shape[-1] in (1, 3):
        return a.permute(0, 3, 1, 2).contiguous()
    if a.ndim == 4 and a.shape[1] in (1, 3):
        return a
    raise ImageSourceError(
        f'{what}: shape {tuple(a.shape)}; expected [N, H, W], [N, H, W, C] or [N, C, H, W] with '
        f'C = 1 or 3. Reshape the array.')


def _load_array_file(path):
    try:
        data = np.load(path, allow_pickle=False, mmap_mode='r' if path.endswith('.npy') else None)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ImageSourceError(
            f'{path!r} cannot be read as a numpy array file ({" ".join(str(err).split())}); it '
            f'is truncated, not numpy, or holds pickled objects (never loaded). Save the images '
            f'with np.save / np.savez as a uint8 array.') from err
    if isinstance(data, np.ndarray):
        return data
    with data:
        keys = list(data.files)
        key = 'images' if 'images' in keys else keys[0] if len(keys) == 1 else None
        if key is None:
            raise ImageSourceError(f'{path!r} holds the arrays {keys}; expected one array, or '
                                   f'one named "images". Save the images under "images".')
        return np.asarray(data[key])


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays, bytes and plain containers; any other global is refused."""

    ALLOWED = {('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
               ('numpy', 'ndarray'), ('numpy', 'dtype'), ('_codecs', 'encode')}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise ImageSourceError(
                f'the pickle asks for {module}.{name}, which is not a numpy array part; a CIFAR-10 '
                f'batch holds only arrays, lists and bytes. The file is not the official one; '
                f'download it again from {CIFAR_URL}.')
        if module == '_codecs':  # protocol-2 pickles written by Python 3 encode bytes with it
            import codecs
            return codecs.encode
        if name == '_reconstruct':
            core = getattr(np, '_core', None) or np.core
            return core.multiarray._reconstruct
        return getattr(np, name)


def read_cifar_batch(path):
    """``(images uint8 [N, 3, 32, 32], labels int64 [N])`` of one CIFAR-10 python batch file,
    through :class:`_NumpyOnlyUnpickler` (call only with the caller's ``allow_pickle``)."""
    with open(path, 'rb') as f:
        raw = f.read()
    try:
        batch = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding='bytes').load()
    except ImageSourceError as err:
        raise ImageSourceError(f'{path}: {err}') from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise ImageSourceError(f'{path}: not a readable CIFAR-10 batch ({err}); download it '
                               f'again from {CIFAR_URL}.') from err
    data = batch.get(b'data', batch.get('data')) if isinstance(batch, dict) else None
    labels = batch.get(b'labels', batch.get('labels')) if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        raise ImageSourceError(f'{path}: expected a dict with "data", a uint8 array [N, 3072] '
                               f'(CIFAR-10\'s python format), but found something else; download '
                               f'it again from {CIFAR_URL}.')
    return (torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()),
            torch.as_tensor(np.asarray(labels if labels is not None else [], dtype=np.int64)))


def _cifar_files(folder, split, allow_pickle):
    if split not in CIFAR_FILES:
        raise ImageSourceError(f'CIFAR-10 split {split!r}; expected "train" (data_batch_1..5, '
                               f'the FID protocol\'s reference) or "test" (test_batch, a proxy).')
    files = [osp.join(folder, name) for name in CIFAR_FILES[split]]
    missing = [f for f in files if not osp.isfile(f)]
    if missing:
        raise ImageSourceError(f'{folder}: missing {", ".join(osp.basename(m) for m in missing)};'
                               f' expected the complete cifar-10-batches-py folder of '
                               f'{CIFAR_URL} (extract the archive).')
    if not allow_pickle:
        raise PickleRefusedError(
            f'{folder} holds CIFAR-10\'s python batches ({", ".join(CIFAR_FILES[split])}), which '
            f'are Python pickles; they are not opened by default, since a pickle from an untrusted '
            f'source can run code. If the files come from the official CIFAR site ({CIFAR_URL}), '
            f'pass --allow-pickle (allow_pickle=True) to read them, through an unpickler that '
            f'only rebuilds numpy arrays; or convert them elsewhere to a folder of PNGs or a uint8 '
            f'.npy array and pass that instead.')
    warnings.warn(f'reading the pickled CIFAR-10 batches in {folder} (allowed by --allow-pickle; '
                  f'only numpy arrays can be rebuilt from them)', stacklevel=3)
    return files


def _image_files(folder):
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [osp.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not found:
        raise ImageSourceError(f'{folder}: no {"/".join(IMAGE_EXTENSIONS)} files in it or its '
                               f'subfolders; expected a folder of images. Check the path.')
    return found


def _read_image(path, mode):
    from PIL import Image
    with Image.open(path) as im:
        if mode is None:
            mode = 'L' if im.mode in ('1', 'L', 'I', 'I;16', 'F') else 'RGB'
        arr = np.asarray(im.convert(mode))
    return arr, mode


def iter_image_batches(source, batch_size=256, max_images=None, allow_pickle=False,
                       cifar_split='train'):
    """Yield uint8 ``[B, C, H, W]`` batches of ``source`` (see the module docstring), at most
    ``max_images`` images in all, in a fixed order."""
    kind = source_kind(source)
    limit = float('inf') if max_images is None else int(max_images)
    done = 0

    def chunks(images):
        nonlocal done
        for start in range(0, len(images), batch_size):
            take = int(min(batch_size, limit - done))
            if take <= 0:
                return
            batch = images[start:start + take]
            done += len(batch)
            yield to_nchw_uint8(batch, what=describe_source(source))

    if kind in ('array', 'npy', 'npz'):
        array = source if kind == 'array' else _load_array_file(os.fspath(source))
        yield from chunks(array)
    elif kind == 'cifar10-python':
        for path in _cifar_files(os.fspath(source), cifar_split, allow_pickle):
            yield from chunks(read_cifar_batch(path)[0])
            if done >= limit:
                return
    else:
        files, mode, shape = _image_files(os.fspath(source)), None, None
        for start in range(0, len(files), batch_size):
            rows = []
            for path in files[start:start + batch_size]:
                if done + len(rows) >= limit:
                    break
                arr, mode = _read_image(path, mode)
                if shape is not None and arr.shape != shape:
                    raise ImageSourceError(
                        f'{path}: an image of shape {arr.shape} after images of {shape}; '
                        f'expected one size for all reference images (the statistics are of the '
                        f'resolution the generator produces). Resize them first.')
                shape = arr.shape
                rows.append(arr)
            if not rows:
                return
            done += len(rows)
            yield to_nchw_uint8(np.stack(rows), what=path)


def describe_source(source):
    """A short text naming the source (for metadata and messages)."""
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return f'in-memory array {tuple(source.shape)}'
    return osp.abspath(os.fspath(source))


def reference_statistics(source, extractor, batch_size=256, max_images=None, allow_pickle=False,
                         cifar_split='train', show_progress=False):
    """:class:`~.frechet.FeatureStatistics` of ``extractor``'s features over ``source``."""
    from common.progress import progress

    from .frechet import FeatureStatistics
    stats = FeatureStatistics()
    batches = iter_image_batches(source, batch_size=batch_size, max_images=max_images,
                                 allow_pickle=allow_pickle, cifar_split=cifar_split)
    if show_progress:
        batches = progress(batches, desc='reference features')
    for images in batches:
        stats.update(extractor(images)['features'])
    if stats.count == 0:
        raise ImageSourceError(f'{describe_source(source)}: no images were read; expected at '
                               f'least 2 for a covariance.')
    return stats
