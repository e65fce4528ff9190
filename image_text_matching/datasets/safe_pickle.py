"""Read a pickle of plain data (REFER's ``refs(google).p``) without running any of its code.

The one rule: only builtin containers and scalars come out (list, dict, tuple, set, frozenset,
str, bytes, int, float, bool, None); any other global the file asks for (a function, a class,
``os.system``, ``builtins.open``) is refused *before* it is looked up, so nothing from the file
runs, and the file is reported as not plain data. Python 2 strings are decoded as UTF-8 (ASCII,
which the REFER files use, is a subset).
"""
import io
import os.path as osp
import pickle

from .base import ITMDataError

__all__ = ['PickleRefusedError', 'read_plain_pickle']

# the globals plain containers need: set/frozenset below protocol 4 (Python 2 names them
# __builtin__), and _codecs.encode for bytes in protocols 0-2 written by Python 3
ALLOWED_GLOBALS = {
    ('builtins', 'set'): set, ('builtins', 'frozenset'): frozenset,
    ('__builtin__', 'set'): set, ('__builtin__', 'frozenset'): frozenset,
    ('_codecs', 'encode'): None,  # resolved lazily below
}


class PickleRefusedError(ITMDataError):
    """The pickle asks for code (a global outside the plain-data allow-list); nothing ran."""


class _PlainDataUnpickler(pickle.Unpickler):

    def __init__(self, file, path, fix):
        super().__init__(file, encoding='utf-8')
        self._path, self._fix = path, fix

    def find_class(self, module, name):
        if (module, name) not in ALLOWED_GLOBALS:
            raise PickleRefusedError(
                f'{self._path} asks to load the Python global {module}.{name}; expected a pickle '
                f'of plain data only (lists, dicts, strings, numbers), as REFER\'s refs files '
                f'are. The file is not that release file, or it was made to run code when '
                f'unpickled: nothing from it was run (do not open it with pickle.load). '
                f'{self._fix}')
        if module == '_codecs':
            import codecs
            return codecs.encode
        return ALLOWED_GLOBALS[(module, name)]

    def persistent_load(self, pid):
        raise PickleRefusedError(
            f'{self._path} uses pickle persistent ids, as torch.save files do; expected a plain '
            f'pickle.dump of lists and dicts. {self._fix}')


def read_plain_pickle(path, fix=''):
    """The object in the pickle file ``path``, built from plain containers and scalars only.

    Raises :class:`PickleRefusedError` when the file asks for any other global (nothing from it
    runs) and :class:`ITMDataError` when it is missing, truncated or not a pickle; ``fix`` ends
    both messages.
    """
    if not osp.isfile(path):
        raise ITMDataError(f'{path}: expected a pickle file, but it does not exist. {fix}')
    with open(path, 'rb') as f:
        raw = f.read()
    try:
        return _PlainDataUnpickler(io.BytesIO(raw), path, fix).load()
    except PickleRefusedError:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, UnicodeDecodeError, MemoryError) as err:
        raise ITMDataError(f'{path}: expected a readable pickle ({type(err).__name__}: '
                           f'{str(err)[:200]}); the file is truncated (an interrupted download: '
                           f'fetch it again) or not a pickle. {fix}') from None
