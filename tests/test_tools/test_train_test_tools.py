"""tools/train.py and tools/test.py: end to end on the tiny config, then their flags and errors.

The end-to-end runs are real subprocesses (the command line a user types); the flag and error
tests call the scripts' ``cli()`` in this process with the Runner replaced by a recorder, so they
cost no training.
"""
import contextlib
import functools
import http.server
import json
import os
import os.path as osp
import shlex
import threading

import pytest
from mmengine.config import Config

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN = osp.join(REPO_ROOT, 'tools', 'train.py')
TEST = osp.join(REPO_ROOT, 'tools', 'test.py')
TINY_STEM = 'tiny-resnet18_1xb4-2e_synthetic'
TINY_CFG = osp.join(REPO_ROOT, 'tests', 'fixtures', 'configs', TINY_STEM + '.py')


@pytest.fixture
def run_tool(tools_kit):
    return tools_kit.run


@pytest.fixture
def data_options(tools_kit):
    return tools_kit.data_options


@pytest.fixture
def load_tool(tools_kit):
    return tools_kit.load


def _meta(path):
    from common.io import load_checkpoint
    return load_checkpoint(path)['meta']


# ----------------------------------------------------------------------------- end to end

def test_train_writes_checkpoints_into_default_work_dir(trained_run):
    work_dir = trained_run.work_dir
    assert osp.isdir(work_dir), os.listdir(trained_run.cwd)
    for epoch in (1, 2):
        assert osp.isfile(osp.join(work_dir, f'epoch_{epoch}.pth'))
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read().strip().endswith('epoch_2.pth')
    meta = _meta(osp.join(work_dir, 'epoch_2.pth'))
    assert (meta['epoch'], meta['iter']) == (2, 4)  # 2 epochs x (8 images / batch 4)
    assert 'Epoch(train) [2][2/2]' in trained_run.proc.output
    assert 'accuracy/top1' in trained_run.proc.output
    # the config's nccl backend is left alone when not distributed
    assert 'rank 0 of' not in trained_run.proc.output


def test_resume_alone_continues_from_latest_checkpoint(trained_run, tiny_data, run_tool,
                                                       data_options):
    proc = run_tool([TRAIN, TINY_CFG, '--resume', '--cfg-options', *data_options(tiny_data),
                     'train_cfg.max_epochs=3'], cwd=trained_run.cwd)
    assert proc.returncode == 0, proc.output[-4000:]
    assert 'resumed epoch: 2, iter: 4' in proc.output
    assert 'Epoch(train) [3][2/2]' in proc.output
    assert 'Epoch(train) [1]' not in proc.output and 'Epoch(train) [2]' not in proc.output
    meta = _meta(osp.join(trained_run.work_dir, 'epoch_3.pth'))
    assert (meta['epoch'], meta['iter']) == (3, 6)


def _build_tiny_model():
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(TINY_CFG)
    with MODELS.switch_scope_and_registry('mmpretrain') as registry:
        return registry.build(cfg.model).eval()


def _tiny_images(root):
    """The test split as the config reads it: BGR 0-255 images, labels by sorted folder name."""
    import numpy as np
    import torch
    from PIL import Image
    split = osp.join(root, 'val')
    classes = sorted(os.listdir(split))  # CustomDataset's class order
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted(os.listdir(osp.join(split, name))):
            rgb = np.asarray(Image.open(osp.join(split, name, file)).convert('RGB'))
            images.append(torch.from_numpy(rgb[..., ::-1].copy()).permute(2, 0, 1).float())
            labels.append(label)
    # the config's data_preprocessor: mean 127.5, std 127.5, no channel swap
    return (torch.stack(images) - 127.5) / 127.5, torch.tensor(labels)


def _crafted_checkpoint(trained, images, labels, wrong, path):
    """The trained checkpoint with its classifier replaced so that the predictions are known.

    The linear head is solved (least squares on the pooled features of ``images``) so that the
    model predicts the true label except for the image indices in ``wrong``. Returns the
    accuracy of the saved checkpoint, computed here by a plain forward pass.
    """
    import torch
    from common.io import load_checkpoint, save_checkpoint
    ckpt = load_checkpoint(trained)
    model = _build_tiny_model()
    model.load_state_dict(ckpt['state_dict'])
    with torch.no_grad():
        feats = model.neck(model.backbone(images))[-1].double()  # [N, 64]
        wanted = labels.clone()
        wanted[list(wrong)] = 1 - wanted[list(wrong)]
        target = (wanted.double() * 2 - 1) * 5.0  # logit(class 1) - logit(class 0) = +-5
        design = torch.cat([feats, torch.ones(len(feats), 1, dtype=feats.dtype)], 1)
        solution = torch.linalg.lstsq(design, target[:, None]).solution[:, 0]
        fc = model.head.fc
        fc.weight.zero_()
        fc.bias.zero_()
        fc.weight[1] = solution[:-1].float()
        fc.bias[1] = solution[-1].float()
        preds = fc(model.neck(model.backbone(images))[-1]).argmax(1)
    assert torch.equal(preds, wanted), 'the crafted head does not give the wanted predictions'
    ckpt['state_dict'] = {k: v.clone() for k, v in model.state_dict().items()}
    save_checkpoint(ckpt, path)
    return 100.0 * float((preds == labels).float().mean())


def test_test_tool_evaluates_checkpoint(trained_run, tmp_path, run_tool, data_options,
                                        tools_kit):
    """The printed top-1 is the accuracy of the checkpoint's own weights.

    The checkpoint's head is crafted to get 3 of 12 test images wrong (75.0%); a run that
    evaluated other weights (a failed or partial load) would print another number.
    """
    data = tools_kit.write_dataset(str(tmp_path / 'data'), per_class=dict(val=6), seed=3)
    images, labels = _tiny_images(data)
    ckpt = str(tmp_path / 'crafted.pth')
    expected = _crafted_checkpoint(osp.join(trained_run.work_dir, 'epoch_2.pth'), images,
                                   labels, wrong=(1, 6, 10), path=ckpt)
    assert expected == 75.0
    show_dir, out = tmp_path / 'vis', tmp_path / 'metrics.json'
    proc = run_tool([TEST, TINY_CFG, ckpt, '--work-dir', str(tmp_path / 'wd'), '--show-dir',
                     str(show_dir), '--out', str(out), '--cfg-options',
                     *data_options(data)], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.output[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith('Test metrics: ')][-1]
    printed = json.loads(line[len('Test metrics: '):])
    assert printed['accuracy/top1'] == pytest.approx(expected)
    assert json.loads(out.read_text()) == printed
    assert any(name.endswith('.png') for name in os.listdir(show_dir))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _http_server(folder):
    """Serve ``folder`` on http://127.0.0.1:PORT/ from a thread; yields the base URL."""
    server = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}/'
    finally:
        server.shutdown()
        server.server_close()


class _ShellPayload:
    """Pickles as ``os.system('touch MARKER')``: runs when unpickled without restrictions."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {shlex.quote(self.marker)}', ))


def _url_env(tools_kit, tmp_path):
    return tools_kit.env(TORCH_HOME=tmp_path / 'torch_home', no_proxy='127.0.0.1,localhost',
                         NO_PROXY='127.0.0.1,localhost')


def test_test_tool_refuses_an_evil_checkpoint_url(tmp_path, tiny_data, tools_kit,
                                                  data_options):
    import torch
    www = tmp_path / 'www'
    www.mkdir()
    marker = tmp_path / 'owned'
    torch.save({'state_dict': {'w': torch.zeros(2)}, 'meta': {'x': _ShellPayload(marker)}},
               www / 'evil.pth')
    with _http_server(www) as base:
        proc = tools_kit.run([TEST, TINY_CFG, base + 'evil.pth', '--work-dir',
                              str(tmp_path / 'wd'), '--cfg-options', *data_options(tiny_data)],
                             cwd=str(tmp_path), env=_url_env(tools_kit, tmp_path))
    assert proc.returncode == 1, proc.output[-4000:]
    assert not marker.exists()
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith('tools/test.py: error: Refused to load ')
    assert 'evil.pth' in err and 'legacy_checkpoint.py' in err and '--trust-this-file' in err
    assert 'Test metrics' not in proc.stdout


def test_test_tool_stops_when_no_key_of_the_checkpoint_matches(tmp_path, tiny_data, tools_kit,
                                                               data_options):
    import torch
    from common.io import save_checkpoint
    www = tmp_path / 'www'
    www.mkdir()
    save_checkpoint({'state_dict': {'encoder.conv.weight': torch.zeros(8, 3, 3, 3),
                                    'decoder.fc.bias': torch.zeros(2)}}, www / 'other.pth')
    with _http_server(www) as base:
        proc = tools_kit.run([TEST, TINY_CFG, base + 'other.pth', '--work-dir',
                              str(tmp_path / 'wd'), '--cfg-options', *data_options(tiny_data)],
                             cwd=str(tmp_path), env=_url_env(tools_kit, tmp_path))
    assert proc.returncode == 1, proc.output[-4000:]
    assert 'Test metrics' not in proc.stdout
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith('tools/test.py: error: Checkpoint ') and 'other.pth' in err
    assert 'fits none of the' in err and 'ImageClassifier' in err
    # the missing keys are listed: the first 20 and a count of the rest
    assert 'missing (' in err and 'backbone.conv1.weight' in err and 'more)' in err


def test_train_resume_stops_on_a_checkpoint_of_another_model(trained_run, tmp_path, run_tool,
                                                             data_options, tiny_data):
    from common.io import load_checkpoint, save_checkpoint
    ckpt = load_checkpoint(osp.join(trained_run.work_dir, 'epoch_2.pth'))
    del ckpt['state_dict']['head.fc.weight']
    path = tmp_path / 'epoch_2_nohead.pth'
    save_checkpoint(ckpt, path)
    proc = run_tool([TRAIN, TINY_CFG, '--work-dir', str(tmp_path / 'wd'), '--resume', str(path),
                     '--cfg-options', *data_options(tiny_data)], cwd=str(tmp_path))
    assert proc.returncode == 1, proc.output[-4000:]
    err = proc.stderr.strip().splitlines()[-1]
    assert 'Cannot resume from' in err and 'missing (1): head.fc.weight' in err
    assert 'Epoch(train)' not in proc.output


# ----------------------------------------------------------------------------- flags, in process

class _RecordingRunner:
    """Stands in for the Runner: remembers the final config and what was called."""

    def __init__(self, cfg):
        self.cfg, self.called = cfg, []
        self.rank, self.distributed = 0, False

    def train(self):
        self.called.append('train')

    def test(self):
        self.called.append('test')
        return {'accuracy/top1': 50.0}


@pytest.fixture
def recorded(monkeypatch, load_tool):
    """Replace the Runner construction of both tools; returns the list of built runners."""
    cli = load_tool('_cli')
    runners = []

    def build(cfg):
        runners.append(_RecordingRunner(cfg))
        return runners[-1]

    monkeypatch.setattr(cli, 'build_runner', build)
    monkeypatch.delenv('DIFFTEACHER_TRACEBACK', raising=False)
    # the scripts export LOCAL_RANK; set-then-delete makes monkeypatch restore the original
    monkeypatch.setenv('LOCAL_RANK', '')
    monkeypatch.delenv('LOCAL_RANK')
    return runners


def test_train_flags_reach_the_config(recorded, tmp_path, monkeypatch, load_tool):
    train = load_tool('train')
    monkeypatch.chdir(tmp_path)
    assert train.cli([TINY_CFG]) == 0
    cfg = recorded[-1].cfg
    assert cfg.work_dir == osp.join('work_dirs', TINY_STEM)
    assert cfg.launcher == 'none' and cfg.resume is False and recorded[-1].called == ['train']
    assert os.environ['LOCAL_RANK'] == '0'

    ckpt = tmp_path / 'some.pth'
    ckpt.write_bytes(b'')
    assert train.cli([TINY_CFG, '--work-dir', 'wd', '--resume', str(ckpt), '--local-rank', '3',
                      '--cfg-options', 'train_cfg.max_epochs=5', '+model.head.cal_acc=True']) == 0
    cfg = recorded[-1].cfg
    assert (cfg.work_dir, cfg.resume, cfg.load_from) == ('wd', True, str(ckpt))
    assert cfg.train_cfg.max_epochs == 5 and cfg.model.head.cal_acc is True
    assert os.environ['LOCAL_RANK'] == '3'

    assert train.cli([TINY_CFG, '--resume']) == 0
    assert (recorded[-1].cfg.resume, recorded[-1].cfg.load_from) == (True, None)


def test_amp_on_cpu_is_a_clear_error(recorded, capsys, monkeypatch, load_tool):
    train = load_tool('train')
    monkeypatch.setattr(train, '_accelerator_available', lambda: False)
    assert train.cli([TINY_CFG, '--amp']) == 2
    err = capsys.readouterr().err
    assert '--amp needs a GPU' in err and 'AmpOptimWrapper' in err and 'Traceback' not in err
    assert not recorded

    monkeypatch.setattr(train, '_accelerator_available', lambda: True)
    assert train.cli([TINY_CFG, '--amp']) == 0
    optim_wrapper = recorded[-1].cfg.optim_wrapper
    assert optim_wrapper.type == 'AmpOptimWrapper' and optim_wrapper.loss_scale == 'dynamic'


def test_cfg_options_typo_names_the_closest_keys(recorded, capsys, load_tool):
    train = load_tool('train')
    assert train.cli([TINY_CFG, '--cfg-options', 'train_cfg.max_epoch=3']) == 2
    err = capsys.readouterr().err.strip()
    assert "'train_cfg.max_epoch'" in err and 'train_cfg.max_epochs' in err
    assert '\n' not in err and 'Traceback' not in err
    assert train.cli([TINY_CFG, '--cfg-options', 'optim_wraper.optimizer.lr=0.1']) == 2
    assert 'optim_wrapper' in capsys.readouterr().err
    # a path that misses its first part is pointed at the full key
    assert train.cli([TINY_CFG, '--cfg-options', 'dataset.data_root=x']) == 2
    assert 'train_dataloader.dataset.data_root' in capsys.readouterr().err
    # cannot descend into a value that is not a dict, even with "+"
    assert train.cli([TINY_CFG, '--cfg-options', '+train_cfg.max_epochs.x=1']) == 2
    assert "'train_cfg.max_epochs' is 2 (int), not a dict" in capsys.readouterr().err
    # list items by index, Runner arguments the config leaves out, "+" for new keys and dicts
    assert train.cli([TINY_CFG, '--cfg-options', 'pipeline.0.type=LoadImageFromFile',
                      'model_wrapper_cfg.type=X', '+randomness.diff_rank_seed=True',
                      '+model.backbone.init_cfg.type=Pretrained']) == 0
    cfg = recorded[-1].cfg
    assert cfg.model_wrapper_cfg.type == 'X' and cfg.randomness.diff_rank_seed is True
    assert cfg.model.backbone.init_cfg.type == 'Pretrained'


def test_missing_config_and_checkpoint_are_one_paragraph(recorded, capsys, tmp_path, load_tool):
    train, test = load_tool('train'), load_tool('test')
    missing_cfg = TINY_CFG.replace('2e_synthetic', '2e_synthetik')
    assert train.cli([missing_cfg]) == 2
    err = capsys.readouterr().err.strip()
    assert 'does not exist' in err and osp.basename(TINY_CFG) in err and '\n' not in err
    assert test.cli([TINY_CFG, str(tmp_path / 'nope.pth')]) == 1
    err = capsys.readouterr().err.strip()
    assert 'nope.pth' in err and 'does not exist' in err and '\n' not in err
    assert train.cli([TINY_CFG, '--resume', str(tmp_path / 'nope.pth')]) == 1
    assert not recorded


def test_toolkit_errors_are_one_paragraph_and_bugs_are_not_hidden(load_tool, capsys,
                                                                   monkeypatch):
    from common.io import UnsafeCheckpointError
    cli = load_tool('_cli')
    monkeypatch.delenv('DIFFTEACHER_TRACEBACK', raising=False)

    def raises(err):
        def main(argv):
            raise err
        return main

    assert cli.run_cli('tool', raises(UnsafeCheckpointError('Refused to load x.pth'))) == 1
    err = capsys.readouterr().err
    assert err.startswith('tool: error: Refused to load x.pth') and err.count('\n') == 1
    # any error class defined in the `common` package counts as a toolkit error
    toolkit_error = type('TeacherLoadError', (RuntimeError, ), {'__module__': 'common.teachers'})
    assert cli.run_cli('tool', raises(toolkit_error('no such teacher'))) == 1
    assert 'no such teacher' in capsys.readouterr().err
    # a config `type` no registry knows: mmengine's KeyError becomes a RunError (exit 1)
    from mmengine.runner import Runner
    registry_miss = KeyError('ResNte is not in the mmpretrain::model registry. Please check')
    monkeypatch.setattr(Runner, 'from_cfg', classmethod(lambda cls, cfg: raises(registry_miss)(0)))
    cfg = Config(dict(launcher='none'))
    assert cli.run_cli('tool', lambda argv: cli.build_runner(cfg)) == 1
    assert 'tool: error: ResNte is not in the mmpretrain::model registry' in capsys.readouterr().err
    with pytest.raises(ZeroDivisionError, match='bug'):  # a bug keeps its traceback
        cli.run_cli('tool', raises(ZeroDivisionError('bug')))
    monkeypatch.setenv('DIFFTEACHER_TRACEBACK', '1')
    with pytest.raises(UnsafeCheckpointError, match='Refused'):
        cli.run_cli('tool', raises(UnsafeCheckpointError('Refused')))


def test_test_tool_flags(recorded, tmp_path, capsys, load_tool):
    test = load_tool('test')
    ckpt = tmp_path / 'model.pth'
    ckpt.write_bytes(b'')
    assert test.cli([TINY_CFG, str(ckpt), '--show-dir', 'vis', '--out', 'preds.pkl']) == 0
    cfg = recorded[-1].cfg
    assert cfg.load_from == str(ckpt) and cfg.resume is False
    hook = cfg.default_hooks.visualization
    assert hook.enable is True and hook.out_dir == osp.abspath('vis') and hook.interval == 1
    assert cfg.test_evaluator[-1] == dict(type='DumpResults', out_file_path='preds.pkl')
    assert 'Test metrics: {"accuracy/top1": 50.0}' in capsys.readouterr().out
    assert test.cli([TINY_CFG, str(ckpt), '--out', 'preds.txt']) == 2


def _hook_cfg(scope, hook, **extra):
    return Config(dict(default_scope=scope, default_hooks=dict(visualization=hook), **extra))


def test_show_dir_matches_each_subtree_hook(tmp_path, load_tool):
    test = load_tool('test')
    cli = load_tool('_cli')
    show_dir = str(tmp_path / 'show')

    seg = _hook_cfg('mmseg', dict(type='SegVisualizationHook'),
                    visualizer=dict(type='SegLocalVisualizer'))
    test.enable_visualization(seg, show_dir)
    assert seg.default_hooks.visualization.draw is True
    assert seg.visualizer.save_dir == show_dir and 'out_dir' not in seg.default_hooks.visualization

    pose = _hook_cfg('mmpose', dict(type='PoseVisualizationHook', enable=False))
    test.enable_visualization(pose, show_dir, interval=5)
    hook = pose.default_hooks.visualization
    assert (hook.enable, hook.out_dir, hook.interval) == (True, show_dir, 5)

    cls = _hook_cfg(None, dict(type='mmpretrain.VisualizationHook'))
    test.enable_visualization(cls, show_dir)
    assert cls.default_hooks.visualization.enable is True

    with pytest.raises(cli.UsageError, match='no default_hooks.visualization'):
        test.enable_visualization(Config(dict(default_hooks=dict())), show_dir)
    with pytest.raises(cli.UsageError, match='no `visualizer`'):
        test.enable_visualization(_hook_cfg('mmseg', dict(type='SegVisualizationHook')),
                                  show_dir)


def test_distributed_on_cpu_uses_gloo_and_cpu_ddp(monkeypatch, load_tool):
    cli = load_tool('_cli')
    monkeypatch.setattr(cli, '_cuda_available', lambda: False)
    cfg = Config.fromfile(TINY_CFG)
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'
    cli.prepare_launcher(cfg, 'pytorch')
    assert cfg.launcher == 'pytorch' and cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.type == 'MMDistributedDataParallel'
    assert cfg.model_wrapper_cfg.device_ids is None

    # no env_cfg at all, and a wrapper of the config's own (a DDP subclass)
    cfg = Config(dict(model=dict(type='X'), model_wrapper_cfg=dict(
        type='MMSeparateDistributedDataParallel', find_unused_parameters=True)))
    cli.prepare_launcher(cfg, 'slurm')
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.device_ids is None and cfg.model_wrapper_cfg.find_unused_parameters

    cfg = Config.fromfile(TINY_CFG)
    cli.prepare_launcher(cfg, 'none')
    assert cfg.env_cfg.dist_cfg.backend == 'nccl' and 'model_wrapper_cfg' not in cfg


def test_test_tool_without_checkpoint_evaluates_the_model_as_configured(
        recorded, tmp_path, monkeypatch, load_tool):
    import mmengine.logging
    test = load_tool('test')
    logged = []
    monkeypatch.setattr(mmengine.logging, 'print_log', lambda msg, **kw: logged.append(msg))
    assert test.cli([TINY_CFG]) == 0
    cfg = recorded[-1].cfg
    assert cfg.load_from is None and cfg.resume is False and recorded[-1].called == ['test']
    assert any('no CHECKPOINT given' in m and 'zero-shot' in m for m in logged), logged
    # a config's own load_from is used, and said so
    ckpt = tmp_path / 'configured.pth'
    ckpt.write_bytes(b'')
    assert test.cli([TINY_CFG, '--cfg-options', f'load_from={ckpt}']) == 0
    assert recorded[-1].cfg.load_from == str(ckpt)
    assert str(ckpt) in logged[-1] and "config's load_from" in logged[-1]
    assert test.cli([TINY_CFG, '--cfg-options', f'load_from={tmp_path / "nope.pth"}']) == 1


def test_out_json_is_the_pair_dump_of_a_pck_metric(tmp_path, load_tool):
    import correspondence.evaluation  # noqa: F401  registers PCKMetric
    test = load_tool('test')
    out = str(tmp_path / 'pairs.json')
    pck = dict(type='PCKMetric', presets=['dift'])
    for evaluator in (dict(pck), [dict(type='DumpResults', out_file_path='x.pkl'), dict(pck)],
                      dict(type='Evaluator', metrics=[dict(pck)])):
        cfg = Config(dict(default_scope=None, test_evaluator=evaluator))
        assert test.add_output(cfg, out) is True
        assert test.pair_dump_metric(cfg)['dump_pairs'] == osp.abspath(out)
    # metrics without a per-pair dump: --out FILE.json stays the metrics, the config untouched
    cfg = Config(dict(default_scope=None, test_evaluator=dict(type='DumpResults',
                                                              out_file_path='x.pkl')))
    assert test.add_output(cfg, out) is False and 'dump_pairs' not in cfg.test_evaluator
    # after the run the dump gets the metrics added under "metrics"
    with open(out, 'w') as f:
        json.dump(dict(alphas=[0.1], protocols={}, pairs=[dict(pair_id='a')]), f)
    test.write_json_out(out, {'dift/pck@0.1/per_point': 50.0}, pair_dump=True)
    with open(out) as f:
        written = json.load(f)
    assert written['pairs'] == [dict(pair_id='a')]
    assert written['metrics'] == {'dift/pck@0.1/per_point': 50.0}
    test.write_json_out(out, {'accuracy/top1': 1.0}, pair_dump=False)
    with open(out) as f:
        assert json.load(f) == {'accuracy/top1': 1.0}
