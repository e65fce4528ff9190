"""Write a whole folder (a diffusers pipeline, a converted model) all or nothing.

The one rule: the folder is built under a temporary sibling name and renamed onto its destination
only once every file in it is written and flushed to disk; an existing destination is replaced
only after that, and put back if the swap fails. A crash or an error at any point leaves either
the old folder or the new one, never a half-written mix. This is the toolkit's only folder writer:
the teacher-export hook and the checkpoint converters all go through :func:`atomic_folder`.
"""
import contextlib
import os
import os.path as osp
import shutil
import tempfile
import uuid

from .atomic import _umask, fsync_file, fsync_folder


def _fsync_tree(root):
    """Flush every file under ``root`` and the folders themselves to disk."""
    for folder, _, files in os.walk(root):
        for name in files:
            path = osp.join(folder, name)
            if not osp.islink(path):
                fsync_file(path)
        fsync_folder(folder)


class FolderExistsError(FileExistsError):
    """The destination folder exists and replacing it was not allowed."""


def check_destination(out_dir, overwrite):
    """Refuse a destination that is a file, or an existing folder without ``overwrite``.

    Call it before long work so that a user learns about the clash at once.
    """
    out_dir = osp.abspath(osp.expanduser(os.fspath(out_dir)))
    if osp.lexists(out_dir) and (not osp.isdir(out_dir) or osp.islink(out_dir)):
        raise FolderExistsError(
            f'{out_dir} exists and is not a folder; refusing to replace it. Move it away or '
            f'choose another output folder.')
    if osp.isdir(out_dir) and not overwrite:
        raise FolderExistsError(
            f'Output folder {out_dir} already exists. Choose another folder, remove it, or '
            f'allow replacing it (e.g. --overwrite); it is only replaced once the new one is '
            f'completely written.')
    return out_dir


def _swap_into_place(new, dest):
    """Rename the complete folder ``new`` onto ``dest``; an existing ``dest`` is moved aside first
    and restored if the rename fails."""
    parent = osp.dirname(dest)
    if not osp.lexists(dest):
        os.rename(new, dest)
        fsync_folder(parent)
        return
    old = osp.join(parent, f'.{osp.basename(dest)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.old')
    os.rename(dest, old)
    try:
        os.rename(new, dest)
    except BaseException:
        os.rename(old, dest)  # put the previous folder back
        raise
    fsync_folder(parent)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(out_dir, overwrite=True):
    """Yield a temporary folder next to ``out_dir``; on success it becomes ``out_dir``.

    Everything written into the yielded folder appears at ``out_dir`` at once, after being
    flushed to disk. On any exception the temporary folder is removed and ``out_dir`` (if it
    existed) is untouched. ``overwrite=False`` refuses an existing ``out_dir`` up front with
    :class:`FolderExistsError`.
    """
    out_dir = check_destination(out_dir, overwrite)
    parent = osp.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{osp.basename(out_dir)}.', suffix='.tmp', dir=parent)
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; give it a folder's mode
        yield tmp
        _fsync_tree(tmp)
        check_destination(out_dir, overwrite)  # it may have appeared meanwhile
        _swap_into_place(tmp, out_dir)
    finally:
        if osp.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def save_pretrained_atomically(obj, out_dir, overwrite=True):
    """``obj.save_pretrained(folder, safe_serialization=True)`` through :func:`atomic_folder`.

    ``obj`` is anything with diffusers/transformers' ``save_pretrained`` (a pipeline, a model).
    Returns the absolute ``out_dir``.
    """
    with atomic_folder(out_dir, overwrite=overwrite) as tmp:
        obj.save_pretrained(tmp, safe_serialization=True)
    return osp.abspath(osp.expanduser(os.fspath(out_dir)))
