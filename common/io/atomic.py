"""Write files so that a crash or an error never leaves a half-written file behind.

The one rule: a file is written under a temporary name in its destination folder, flushed to disk
(``fsync`` of the file), renamed onto the destination, and the folder is flushed too, so after a
crash the destination holds either the old content or the complete new content, never a prefix.
"""
import contextlib
import os
import tempfile


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_file(path):
    """Flush the content of the file at ``path`` to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder):
    """Flush a folder's entries (a rename into it) to the disk; a no-op where unsupported."""
    flags = os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0)
    try:
        fd = os.open(folder, flags)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders; the rename is still atomic
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path, fsync=True):
    """Yield a temporary path in the destination's folder; rename it onto ``path`` on success.

    Whatever was written to the temporary path is flushed to the disk (``fsync``) before the
    rename, and the folder after it. On any exception the temporary file is removed and ``path``
    is left untouched. ``fsync=False`` skips the flushes (for entries that can be recomputed,
    such as a cache; the rename is still atomic).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    os.close(fd)
    # mkstemp creates the file owner-only (0600); give it the mode open() would have given.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        if fsync:
            fsync_file(tmp)
        os.replace(tmp, path)
        if fsync:
            fsync_folder(folder)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_bytes(path, data, fsync=True):
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    with atomic_path(path, fsync=fsync) as tmp:
        with open(tmp, 'wb') as f:
            f.write(data)


def atomic_write_text(path, text, encoding='utf-8', fsync=True):
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    atomic_write_bytes(path, text.encode(encoding), fsync=fsync)
