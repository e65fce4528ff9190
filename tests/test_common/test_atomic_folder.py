"""``common.io.atomic_folder``: the toolkit's one folder writer (all or nothing, flushed)."""
import os

import pytest

from common.io import atomic_folder as af


def _tree(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path) as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def test_new_folder_appears_complete_with_normal_mode(tmp_path):
    dest = tmp_path / 'out'
    with af.atomic_folder(dest) as tmp:
        assert not dest.exists()  # nothing visible while writing
        os.makedirs(os.path.join(tmp, 'unet'))
        with open(os.path.join(tmp, 'unet', 'config.json'), 'w') as f:
            f.write('{}')
    assert _tree(dest) == {os.path.join('unet', 'config.json'): '{}'}
    assert os.listdir(tmp_path) == ['out']  # no temporary folder left
    mask = os.umask(0o022)
    os.umask(mask)
    assert os.stat(dest).st_mode & 0o777 == 0o777 & ~mask  # not mkdtemp's private 0700


def test_failure_keeps_the_old_folder_and_leaves_no_temporary(tmp_path):
    dest = tmp_path / 'out'
    dest.mkdir()
    (dest / 'old.txt').write_text('old')
    with pytest.raises(OSError, match='disk full'):
        with af.atomic_folder(dest) as tmp:
            with open(os.path.join(tmp, 'half.txt'), 'w') as f:
                f.write('half')
            raise OSError('disk full')
    assert _tree(dest) == {'old.txt': 'old'}
    assert os.listdir(tmp_path) == ['out']


def test_replacing_swaps_whole_folders(tmp_path):
    dest = tmp_path / 'out'
    dest.mkdir()
    (dest / 'old.txt').write_text('old')
    with af.atomic_folder(dest) as tmp:
        with open(os.path.join(tmp, 'new.txt'), 'w') as f:
            f.write('new')
    assert _tree(dest) == {'new.txt': 'new'}  # no mix of old and new files
    assert os.listdir(tmp_path) == ['out']


def test_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    dest = tmp_path / 'out'
    dest.mkdir()
    (dest / 'old.txt').write_text('old')
    real_rename = os.rename
    calls = []

    def rename(src, dst):
        calls.append((os.path.basename(src), os.path.basename(dst)))
        if len(calls) == 2:  # the new folder onto the destination
            raise OSError('rename failed')
        return real_rename(src, dst)

    monkeypatch.setattr(af.os, 'rename', rename)
    with pytest.raises(OSError, match='rename failed'):
        with af.atomic_folder(dest) as tmp:
            with open(os.path.join(tmp, 'new.txt'), 'w') as f:
                f.write('new')
    monkeypatch.undo()
    assert _tree(dest) == {'old.txt': 'old'}
    assert os.listdir(tmp_path) == ['out']


def test_files_are_flushed_before_the_rename(tmp_path, monkeypatch):
    synced, events = [], []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        synced.append(os.readlink(f'/proc/self/fd/{fd}'))
        events.append('fsync')
        return real_fsync(fd)

    def rename(src, dst):
        events.append('rename')
        return real_rename(src, dst)

    monkeypatch.setattr(af.os, 'fsync', fsync)
    monkeypatch.setattr(af.os, 'rename', rename)
    with af.atomic_folder(tmp_path / 'out') as tmp:
        with open(os.path.join(tmp, 'weights.bin'), 'wb') as f:
            f.write(b'\0' * 10)
    assert any(p.endswith('weights.bin') for p in synced)
    assert events.index('rename') > events.index('fsync')


def test_refusals(tmp_path):
    (tmp_path / 'file').write_text('x')
    with pytest.raises(af.FolderExistsError, match='is not a folder'):
        with af.atomic_folder(tmp_path / 'file'):
            pass
    (tmp_path / 'kept').mkdir()
    with pytest.raises(af.FolderExistsError, match='already exists'):
        with af.atomic_folder(tmp_path / 'kept', overwrite=False):
            pass
    assert sorted(os.listdir(tmp_path)) == ['file', 'kept']


def test_save_pretrained_round_trip(tmp_path):
    from diffusers import UNet2DModel
    import torch
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(8, 8), norm_num_groups=4,
                       down_block_types=('DownBlock2D', 'DownBlock2D'),
                       up_block_types=('UpBlock2D', 'UpBlock2D'))
    out = af.save_pretrained_atomically(unet, tmp_path / 'unet')
    loaded = UNet2DModel.from_pretrained(out)
    for (k, a), (_, b) in zip(unet.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
