"""Every checkpoint URL scheme of mmengine goes through the safe loader (common/io/schemes.py).

Each scheme is served from a stand-in: an HTTP server on 127.0.0.1 started here, mmengine's
name tables patched to point at it, or stub pavi / petrel backends. The evil file's payload would
create a marker file when unpickled; it must stay absent.
"""
import functools
import http.server
import os
import shlex
import sys
import threading
import types

import pytest
import torch

import common  # noqa: F401  (patches mmengine)
from common.io import CheckpointLoadError, UnsafeCheckpointError, load_checkpoint


class _ShellPayload:
    """Pickles as ``os.system('touch MARKER')``: runs when unpickled without restrictions."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {shlex.quote(self.marker)}', ))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):

    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A folder served over http://127.0.0.1:PORT/ plus an empty torch hub cache.

    Returns a namespace with ``url(name)``, ``folder``, ``marker``, ``evil`` and ``good`` (the
    file names of an evil and of a weights-only checkpoint) and ``weights``.
    """
    folder = tmp_path / 'www'
    folder.mkdir()
    marker = tmp_path / 'owned'
    weights = {'backbone.w': torch.arange(4.0), 'head.b': torch.ones(2)}
    torch.save({'state_dict': {'w': torch.zeros(2)}, 'meta': {'note': _ShellPayload(marker)}},
               folder / 'evil.pth')
    torch.save({'state_dict': weights, 'meta': {'epoch': 3}}, folder / 'good.pth')
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setenv('no_proxy', '127.0.0.1,localhost')
    monkeypatch.setenv('NO_PROXY', '127.0.0.1,localhost')
    server = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f'http://127.0.0.1:{server.server_address[1]}/'
    yield types.SimpleNamespace(url=lambda name: base + name, folder=folder, marker=marker,
                                weights=weights, tmp=tmp_path)
    server.shutdown()
    server.server_close()


def _mm_load(path):
    from mmengine.runner.checkpoint import _load_checkpoint
    return _load_checkpoint(path, map_location='cpu')


def _assert_refused(path, served):
    with pytest.raises(UnsafeCheckpointError, match='Refused to load') as info:
        _mm_load(path)
    assert not served.marker.exists()
    return str(info.value)


def _assert_good(ckpt, served):
    state = ckpt['state_dict']
    assert set(state) == set(served.weights) and ckpt['meta'] == {'epoch': 3}
    for key, value in served.weights.items():
        assert torch.equal(state[key], value)


def test_every_registered_scheme_has_a_safe_loader():
    from mmengine.runner.checkpoint import CheckpointLoader
    assert len(CheckpointLoader._schemes) >= 11  # '', http(s), pavi, s3, petrel, modelzoo, ...
    for prefix, loader in CheckpointLoader._schemes.items():
        assert loader.__module__.startswith('common.io.'), (prefix, loader)
    examples = {'x.pth': 'load_from_local', 'http://h/x.pth': 'load_from_http',
                'https://h/x.pth': 'load_from_http',
                'torchvision://resnet18': 'load_from_torchvision',
                'modelzoo://resnet18': 'load_from_torchvision',
                'open-mmlab://x': 'load_from_openmmlab', 'openmmlab://x': 'load_from_openmmlab',
                'mmcls://x': 'load_from_mmcls', 'pavi://x': 'load_from_pavi',
                's3://b/x.pth': 'load_from_ceph', 'open-mmlab:s3://b/x.pth': 'load_from_ceph',
                'petrel://b/x.pth': 'load_from_ceph'}
    for path, name in examples.items():
        assert CheckpointLoader._get_checkpoint_loader(path).__name__ == name, path


def test_http_payload_is_live_when_unpickled_the_way_mmengine_did(served):
    """Control: torch.hub's loader, as mmengine 0.10.7 calls it, runs the payload."""
    torch.hub.load_state_dict_from_url(served.url('evil.pth'), model_dir=str(served.tmp / 'c'),
                                       weights_only=False, progress=False)
    assert served.marker.exists()


def test_http_and_https_are_downloaded_then_loaded_safely(served):
    message = _assert_refused(served.url('evil.pth'), served)
    cached = os.path.join(torch.hub.get_dir(), 'checkpoints', 'evil.pth')
    assert os.path.isfile(cached)  # downloaded into torch hub's cache, then refused
    assert f'legacy_checkpoint.py {cached} ' in message and '--trust-this-file' in message
    _assert_good(_mm_load(served.url('good.pth')), served)
    # the direct function of mmengine's module is ours too
    from mmengine.runner import checkpoint as mmengine_checkpoint
    with pytest.raises(UnsafeCheckpointError, match='Refused to load'):
        mmengine_checkpoint.load_from_http(served.url('evil.pth'))
    assert not served.marker.exists()


def test_https_url_routes_to_the_same_loader(served, monkeypatch):
    from common.io import schemes
    seen = []
    real_download = schemes.download

    def download(url, model_dir=None, progress=None):
        seen.append(url)
        return real_download(url.replace('https://', 'http://'), model_dir, progress)

    monkeypatch.setattr(schemes, 'download', download)
    https = served.url('evil.pth').replace('http://', 'https://')
    _assert_refused(https, served)
    assert seen == [https]


def test_download_failure_is_a_load_error(served):
    with pytest.raises(CheckpointLoadError, match='Could not download checkpoint .*missing.pth'):
        _mm_load(served.url('missing.pth'))


@pytest.mark.parametrize('scheme', ['torchvision://', 'modelzoo://'])
def test_torchvision_names_are_looked_up_then_loaded_safely(served, monkeypatch, scheme):
    import mmengine.runner.checkpoint as mmengine_checkpoint
    table = {'evilnet': served.url('evil.pth'), 'goodnet': served.url('good.pth')}
    monkeypatch.setattr(mmengine_checkpoint, 'get_torchvision_models', lambda: table)
    _assert_refused(scheme + 'evilnet', served)
    _assert_good(_mm_load(scheme + 'goodnet'), served)
    with pytest.raises(CheckpointLoadError, match="Closest names: goodnet"):
        _mm_load(scheme + 'goodnett')


@pytest.mark.parametrize('scheme', ['open-mmlab://', 'openmmlab://'])
def test_openmmlab_names_urls_and_home_files_load_safely(served, monkeypatch, scheme):
    import mmengine.runner.checkpoint as mmengine_checkpoint
    home = served.tmp / 'mmengine_home'
    home.mkdir()
    (home / 'local_evil.pth').write_bytes((served.folder / 'evil.pth').read_bytes())
    table = {'evil': served.url('evil.pth'), 'good': served.url('good.pth'),
             'home_evil': 'local_evil.pth'}
    monkeypatch.setattr(mmengine_checkpoint, 'get_external_models', lambda: table)
    monkeypatch.setattr(mmengine_checkpoint, 'get_deprecated_model_names',
                        lambda: {'old_good': 'good'})
    monkeypatch.setattr(mmengine_checkpoint, '_get_mmengine_home', lambda: str(home))
    _assert_refused(scheme + 'evil', served)
    _assert_refused(scheme + 'home_evil', served)  # a file under mmengine's home
    _assert_good(_mm_load(scheme + 'good'), served)
    _assert_good(_mm_load(scheme + 'old_good'), served)  # deprecated name -> new name


def test_mmcls_names_load_safely_and_keep_the_backbone(served, monkeypatch):
    import mmengine.runner.checkpoint as mmengine_checkpoint
    table = {'evil': served.url('evil.pth'), 'good': served.url('good.pth')}
    monkeypatch.setattr(mmengine_checkpoint, 'get_mmcls_models', lambda: table)
    _assert_refused('mmcls://evil', served)
    state = _mm_load('mmcls://good')['state_dict']
    assert list(state) == ['w'] and torch.equal(state['w'], served.weights['backbone.w'])


def test_pavi_downloads_then_loads_safely(served, monkeypatch):
    import shutil

    class Model:

        def __init__(self, path):
            self.name = os.path.basename(path)
            self.path = path

        def download(self, dst):
            shutil.copy(served.folder / self.path, dst)

    modelcloud = types.SimpleNamespace(get=Model)
    monkeypatch.setitem(sys.modules, 'pavi', types.SimpleNamespace(modelcloud=modelcloud))
    _assert_refused('pavi://evil.pth', served)
    _assert_good(_mm_load('pavi://good.pth'), served)


@pytest.mark.parametrize('path', ['s3://bucket/ckpt.pth', 'petrel://bucket/ckpt.pth',
                                  'open-mmlab:s3://bucket/ckpt.pth'])
def test_s3_and_petrel_bytes_load_safely(served, monkeypatch, path):
    import mmengine.fileio
    payload = {}

    class Backend:

        def get(self, filepath):
            assert filepath == path
            return payload['bytes']

    monkeypatch.setattr(mmengine.fileio, 'get_file_backend', lambda *a, **k: Backend())
    payload['bytes'] = (served.folder / 'evil.pth').read_bytes()
    message = _assert_refused(path, served)
    assert path in message  # names the remote file, not the temporary copy
    payload['bytes'] = (served.folder / 'good.pth').read_bytes()
    _assert_good(_mm_load(path), served)


def test_a_loader_registered_later_by_another_package_is_refused(served, monkeypatch):
    from mmengine.runner.checkpoint import CheckpointLoader
    monkeypatch.setattr(CheckpointLoader, '_schemes', dict(CheckpointLoader._schemes))

    def load_from_vendor(filename, map_location=None):  # an unrestricted loader
        return torch.load(served.folder / 'evil.pth', weights_only=False)

    CheckpointLoader.register_scheme('vendor://', load_from_vendor)
    with pytest.raises(UnsafeCheckpointError, match="scheme 'vendor://' is handled by .*"
                       "load_from_vendor"):
        _mm_load('vendor://model.pth')
    assert not served.marker.exists()


def test_cached_evil_file_is_refused_again_without_download(served):
    _assert_refused(served.url('evil.pth'), served)
    (served.folder / 'evil.pth').unlink()  # the second load reads the cache
    _assert_refused(served.url('evil.pth'), served)
    with pytest.raises(UnsafeCheckpointError, match='Refused to load'):
        load_checkpoint(os.path.join(torch.hub.get_dir(), 'checkpoints', 'evil.pth'))
