"""Let mmseg and mmpose import on mmcv-lite.

mmcv-lite ships no compiled ops (``mmcv._ext``), but ``mmseg.models`` and ``mmpose.models`` import
``mmcv.ops`` at import time. The models this toolkit trains (BiSeNet, ResNet, HRNet, heatmap heads)
never call those ops, so we register a stand-in ``mmcv._ext`` whose every op raises a clear error
*when called*. The stand-in is installed only when the compiled ops are really absent.

Finding out imports nothing: the ``_ext`` extension is looked up in mmcv's package folder the way
the import system would, without importing mmcv (whose ``__init__`` imports torch and
mmengine), so ``import common`` does not pay for mmcv until mmseg or mmpose imports it.
"""
import importlib
import importlib.machinery
import importlib.util
import sys
import types

FULL_MMCV_HINT = ('Install the compiled ops with `make install-full-mmcv` (builds mmcv 2.1.0 from '
                  'source, about 27 min on 2 cores), or pick a model that does not use this op.')


class MissingMmcvOpError(RuntimeError):
    """Raised when a model calls an mmcv op that this environment has not compiled."""


def _missing_op(name):

    def op(*args, **kwargs):
        raise MissingMmcvOpError(
            f"The mmcv op '{name}' was called, but this environment has mmcv-lite, which ships no "
            f'compiled ops (mmcv._ext is missing). {FULL_MMCV_HINT}')

    op.__name__ = name
    return op


class _MissingExtModule(types.ModuleType):
    """Module whose attributes are ops that raise :class:`MissingMmcvOpError` when called."""

    is_diffteacher_fallback = True

    def __getattr__(self, name):
        if name.startswith('__') and name.endswith('__'):
            # inspect / importlib probe dunders; answering them would break introspection.
            raise AttributeError(name)
        return _missing_op(name)


def _mmcv_search_path():
    """mmcv's package folders (its live ``__path__`` once imported), or None without mmcv."""
    if 'mmcv' in sys.modules:
        return list(getattr(sys.modules['mmcv'], '__path__', None) or [])
    spec = importlib.util.find_spec('mmcv')  # a top-level spec: mmcv is not imported
    if spec is None:
        return None
    return list(spec.submodule_search_locations or [])


def compiled_ops_available():
    """True when mmcv is installed with its compiled ``_ext`` module (mmcv is not imported)."""
    if 'mmcv._ext' in sys.modules:
        return not getattr(sys.modules['mmcv._ext'], 'is_diffteacher_fallback', False)
    path = _mmcv_search_path()
    if not path:  # mmcv itself is not installed
        return False
    return importlib.machinery.PathFinder.find_spec('mmcv._ext', path) is not None


def install_mmcv_ext_fallback():
    """Register the stand-in ``mmcv._ext`` if mmcv is installed without compiled ops.

    Returns True when the fallback is (now) active.
    """
    if _mmcv_search_path() is None or compiled_ops_available():
        return False
    if 'mmcv._ext' not in sys.modules:
        module = _MissingExtModule('mmcv._ext')
        # A spec without a loader: mmengine's mmcv_full_available() (pkgutil.find_loader) then
        # answers False instead of raising "mmcv._ext.__spec__ is None".
        module.__spec__ = importlib.machinery.ModuleSpec('mmcv._ext', loader=None)
        sys.modules['mmcv._ext'] = module
    return True
