"""mmengine's checkpoint URL schemes, each routed through the safe loader.

mmengine 0.10.7 registers loaders for ``http://``/``https://``, ``torchvision://``/``modelzoo://``,
``open-mmlab://``/``openmmlab://``, ``mmcls://``, ``pavi://`` and ``s3://``/``petrel://``; all of
them end in an unrestricted ``torch.load`` (the HTTP one through
``torch.hub.load_state_dict_from_url``, which unpickles with ``weights_only=False``).

The one rule: a scheme only fetches bytes; reading them is always :func:`load_checkpoint`'s job.
URLs are downloaded into torch hub's cache (``$TORCH_HOME/hub/checkpoints``, written to a
temporary file and renamed, as ``torch.hub`` does) and that file is loaded like a local one.
The model names of ``torchvision://``, ``open-mmlab://`` and ``mmcls://`` are looked up with
mmengine's own tables. A loader that this module does not know (registered by another package)
is refused rather than run: see :func:`guard_checkpoint_loader`.
"""
import os
import os.path as osp
import re
import tempfile
import zipfile
from urllib.parse import urlparse

from .checkpoint import CheckpointLoadError, UnsafeCheckpointError, load_checkpoint

# the prefixes below, as mmengine 0.10.7 registers them (regular expressions, matched at the start)
HTTP_PREFIXES = ('http://', 'https://')
TORCHVISION_PREFIXES = ('modelzoo://', 'torchvision://')
OPENMMLAB_PREFIXES = ('open-mmlab://', 'openmmlab://')
MMCLS_PREFIXES = ('mmcls://', )
PAVI_PREFIXES = ('pavi://', )
CEPH_PREFIXES = (r'(\S+\:)?s3://', r'(\S+\:)?petrel://')


def hub_checkpoint_dir():
    """torch hub's checkpoint cache folder (``$TORCH_HOME/hub/checkpoints``)."""
    import torch.hub
    return osp.join(torch.hub.get_dir(), 'checkpoints')


def _is_legacy_zip(path):
    """A zip holding one file: how torch < 1.6 checkpoints were sometimes compressed by hand."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        members = zf.infolist()
    return len(members) == 1 and not members[0].is_dir()


def download(url, model_dir=None, progress=None):
    """Download ``url`` into the hub cache once and return the local file's path.

    An existing cached file is reused (as ``torch.hub`` does). The download goes to a temporary
    file that is renamed when complete (``torch.hub.download_url_to_file``).
    """
    from torch.hub import download_url_to_file
    model_dir = model_dir or hub_checkpoint_dir()
    os.makedirs(model_dir, exist_ok=True)
    filename = osp.basename(urlparse(url).path)
    if not filename:
        raise CheckpointLoadError(
            f'Checkpoint URL {url!r} does not end in a file name, so it cannot be cached. Use '
            f'the URL of the .pth/.safetensors file itself.')
    cached = osp.join(model_dir, filename)
    if not osp.exists(cached):
        if progress is None:
            progress = os.isatty(2)
        print(f'Downloading {url!r} to {cached!r}', flush=True)
        try:
            download_url_to_file(url, cached, None, progress=progress)
        except OSError as err:  # urllib's URLError/HTTPError are OSErrors
            raise CheckpointLoadError(
                f'Could not download checkpoint {url!r} ({type(err).__name__}: {err}). Check the '
                f'URL and the network; on a machine without access, download the file elsewhere '
                f'and pass its local path instead (or put it at {cached!r}).') from None
    return cached


def load_cached(path, map_location=None):
    """Load a downloaded file through the safe loader (a single-file legacy zip is unpacked)."""
    if _is_legacy_zip(path):
        with zipfile.ZipFile(path) as zf:
            member = zf.infolist()[0]
            zf.extract(member, osp.dirname(path))
            path = osp.join(osp.dirname(path), member.filename)
    return load_checkpoint(path, map_location=map_location)


def load_url(url, map_location=None, model_dir=None, progress=None):
    """Download ``url`` (rank 0 first in a distributed run) and load it safely."""
    from mmengine.dist import barrier, get_dist_info
    rank, world_size = get_dist_info()
    if rank == 0:
        cached = download(url, model_dir, progress)
    if world_size > 1:
        barrier()
        if rank > 0:
            cached = download(url, model_dir, progress)
    return load_cached(cached, map_location)


def _lookup(table, name, scheme, what):
    if name in table:
        return table[name]
    import difflib
    close = difflib.get_close_matches(name, list(table), n=5, cutoff=0.6)
    hint = f'Closest names: {", ".join(close)}.' if close else ''
    raise CheckpointLoadError(
        f'{scheme}{name} is not a known {what} (mmengine\'s table has {len(table)} names). '
        f'{hint} Use one of those names, or a URL or local path of the checkpoint.')


# ----------------------------------------------------------------------------- scheme loaders
# (mmengine's loader signature: ``loader(filename, map_location)``)

def load_from_http(filename, map_location=None, model_dir=None, progress=None):
    """``http://`` and ``https://``: download into the hub cache, then load safely."""
    return load_url(filename, map_location, model_dir=model_dir, progress=progress)


def load_from_torchvision(filename, map_location=None):
    """``torchvision://NAME`` (and the deprecated ``modelzoo://NAME``)."""
    from mmengine.runner.checkpoint import get_torchvision_models
    scheme = next(p for p in TORCHVISION_PREFIXES if filename.startswith(p))
    url = _lookup(get_torchvision_models(), filename[len(scheme):], scheme,
                  'torchvision model name')
    return load_url(url, map_location)


def load_from_openmmlab(filename, map_location=None):
    """``open-mmlab://NAME`` / ``openmmlab://NAME``: a URL or a file under mmengine's home."""
    from mmengine.logging import print_log
    from mmengine.runner.checkpoint import (_get_mmengine_home, get_deprecated_model_names,
                                            get_external_models)
    scheme = next(p for p in OPENMMLAB_PREFIXES if filename.startswith(p))
    name = filename[len(scheme):]
    deprecated = get_deprecated_model_names()
    if name in deprecated:
        print_log(f'{scheme}{name} is deprecated in favor of {scheme}{deprecated[name]}',
                  logger='current', level=30)
        name = deprecated[name]
    url = _lookup(get_external_models(), name, scheme, 'OpenMMLab model name')
    if url.startswith(HTTP_PREFIXES):
        return load_url(url, map_location)
    return load_checkpoint(osp.join(_get_mmengine_home(), url), map_location=map_location)


def load_from_mmcls(filename, map_location=None):
    """``mmcls://NAME``: the backbone weights of an mmcls model (``backbone.`` stripped)."""
    from mmengine.runner.checkpoint import _process_mmcls_checkpoint, get_mmcls_models
    scheme = MMCLS_PREFIXES[0]
    url = _lookup(get_mmcls_models(), filename[len(scheme):], scheme, 'mmcls model name')
    return _process_mmcls_checkpoint(load_url(url, map_location))


def load_from_pavi(filename, map_location=None):
    """``pavi://PATH``: download from pavi's model cloud into a temporary folder, load safely."""
    try:
        from pavi import modelcloud
    except ImportError:
        raise CheckpointLoadError(
            f'Checkpoint {filename!r} needs the `pavi` package, which is not installed. Install '
            f'it, or download the file and pass its local path.') from None
    model = modelcloud.get(filename[len('pavi://'):])
    with tempfile.TemporaryDirectory() as tmp_dir:
        local = osp.join(tmp_dir, osp.basename(model.name) or 'checkpoint.pth')
        model.download(local)
        return load_checkpoint(local, map_location=map_location)


def load_from_ceph(filename, map_location=None, backend='petrel'):
    """``s3://`` / ``petrel://``: read the bytes through mmengine's file backend, load safely."""
    from mmengine.fileio import get_file_backend
    file_backend = get_file_backend(filename, backend_args={'backend': backend})
    data = file_backend.get(filename)
    with tempfile.TemporaryDirectory() as tmp_dir:
        name = osp.basename(filename.rstrip('/')) or 'checkpoint.pth'
        local = osp.join(tmp_dir, name)
        with open(local, 'wb') as f:
            f.write(data)
        try:
            return load_checkpoint(local, map_location=map_location)
        except (UnsafeCheckpointError, CheckpointLoadError) as err:
            # name the remote file, not the temporary copy
            raise type(err)(str(err).replace(local, filename)) from None


SCHEMES = (
    (HTTP_PREFIXES, load_from_http),
    (TORCHVISION_PREFIXES, load_from_torchvision),
    (OPENMMLAB_PREFIXES, load_from_openmmlab),
    (MMCLS_PREFIXES, load_from_mmcls),
    (PAVI_PREFIXES, load_from_pavi),
    (CEPH_PREFIXES, load_from_ceph),
)


def register_safe_schemes(checkpoint_loader, module=None):
    """Register this module's loaders over mmengine's (``force=True``) for every scheme.

    The functions of the same name in ``module`` (``mmengine.runner.checkpoint``, where code can
    call ``load_from_http`` directly) are replaced too.
    """
    for prefixes, loader in SCHEMES:
        checkpoint_loader.register_scheme(prefixes=list(prefixes), loader=loader, force=True)
        if module is not None and hasattr(module, loader.__name__):
            setattr(module, loader.__name__, loader)


def refusing_loader(prefix, loader):
    """A loader that refuses: ``loader`` was registered for ``prefix`` by code not vetted here."""

    def load_from_unvetted_scheme(filename, map_location=None):
        raise UnsafeCheckpointError(
            f'Refused to load {filename!r}: its scheme {prefix!r} is handled by '
            f'{getattr(loader, "__module__", "?")}.{getattr(loader, "__name__", repr(loader))}, '
            f'a loader this toolkit has not routed through its safe loader (it may unpickle '
            f'code). Download the file yourself and pass its local path (or an http(s) URL), '
            f'which is loaded with weights_only=True.')

    return load_from_unvetted_scheme


def is_safe_loader(loader):
    """Loaders of this package (the local one and the schemes above)."""
    return getattr(loader, '__module__', '').startswith('common.io.')


def guard_checkpoint_loader(checkpoint_loader):
    """Make ``CheckpointLoader`` refuse any loader that is not one of this package's.

    A package imported after :func:`patch_mmengine` could register its own scheme (with an
    unrestricted ``torch.load``); the lookup is wrapped so that such a loader is never called.
    """
    original = checkpoint_loader.__dict__['_get_checkpoint_loader'].__func__
    if getattr(original, '_diffteacher_guard', False):
        return

    def _get_checkpoint_loader(cls, path):
        for prefix, loader in cls._schemes.items():
            if re.match(prefix, path) is not None:
                return loader if is_safe_loader(loader) else refusing_loader(prefix, loader)
        return original(cls, path)

    _get_checkpoint_loader._diffteacher_guard = True
    checkpoint_loader._get_checkpoint_loader = classmethod(_get_checkpoint_loader)
