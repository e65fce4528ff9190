"""Let mmseg and mmpose import on mmcv-lite.

mmcv-lite ships no compiled ops (``mmcv._ext``), but ``mmseg.models`` and ``mmpose.models`` import
``mmcv.ops`` at import time. The models this toolkit trains (BiSeNet, ResNet, HRNet, heatmap heads)
never call those ops, so we register a stand-in ``mmcv._ext`` whose every op raises a clear error
*when called*. The stand-in is installed only when the compiled ops are really absent.
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


def compiled_ops_available():
    """True when mmcv is installed with its compiled ``_ext`` module."""
    if 'mmcv._ext' in sys.modules:
        return not getattr(sys.modules['mmcv._ext'], 'is_diffteacher_fallback', False)
    try:
        return importlib.util.find_spec('mmcv._ext') is not None
    except ModuleNotFoundError:  # mmcv itself is not installed
        return False


def install_mmcv_ext_fallback():
    """Register the stand-in ``mmcv._ext`` if mmcv is installed without compiled ops.

    Returns True when the fallback is (now) active.
    """
    if importlib.util.find_spec('mmcv') is None or compiled_ops_available():
        return False
    if 'mmcv._ext' not in sys.modules:
        module = _MissingExtModule('mmcv._ext')
        # A spec without a loader: mmengine's mmcv_full_available() (pkgutil.find_loader) then
        # answers False instead of raising "mmcv._ext.__spec__ is None".
        module.__spec__ = importlib.machinery.ModuleSpec('mmcv._ext', loader=None)
        sys.modules['mmcv._ext'] = module
    return True
