"""What ``tools/train.py`` and ``tools/test.py`` share: arguments, config handling, launching.

The two scripts are thin: they parse their own flags, then call the helpers here in order
(:func:`load_config`, :func:`set_work_dir`, :func:`prepare_launcher`, :func:`build_runner`) and
run the whole thing through :func:`run_cli`, which turns the mistakes a user can make (a missing
file, a mistyped ``--cfg-options`` key, an unsafe or truncated checkpoint, ``--amp`` without a
GPU) into one paragraph on stderr and a non-zero exit code instead of a traceback.

Exit codes: 0 success, 1 a run-time error the user can fix (checkpoint, model, registry),
2 a usage error (arguments, config file, config keys).

Start-up rule: this module and the argument parsing of every tool import only the standard
library, so ``--help`` and argument errors answer at once; torch, mmengine, diffusers and
``common`` (which pulls mmengine's runner, optimizers and, through them, transformers and peft)
are imported after the arguments are parsed. ``tests/test_tools/test_startup.py`` checks it.
"""
import argparse
import difflib
import inspect
import os
import os.path as osp
import sys
from datetime import timedelta

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

# Set this environment variable to 1 to get the full traceback instead of the short message.
TRACEBACK_ENV = 'DIFFTEACHER_TRACEBACK'


def make_repo_importable():
    """Put the repository root first on ``sys.path`` (and on ``PYTHONPATH`` for child processes).

    Configs name subtree packages (``segmentation``, ``landmark``, ...) in ``custom_imports``; this
    makes them importable from a plain checkout, without ``pip install -e .``.
    """
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    paths = os.environ.get('PYTHONPATH', '').split(os.pathsep)
    if REPO_ROOT not in paths:
        os.environ['PYTHONPATH'] = os.pathsep.join([REPO_ROOT] + [p for p in paths if p])


class UsageError(Exception):
    """A mistake in the command line or the config; printed as one paragraph, exit code 2."""


class RunError(Exception):
    """A run-time problem the user can fix (e.g. a missing checkpoint); exit code 1."""


# ----------------------------------------------------------------------------- arguments

CFG_OPTIONS_HELP = (
    'Override config entries, as KEY=VALUE pairs separated by spaces; KEY is a dotted path into '
    'the config (list items by index: train_pipeline.1.scale=64). Lists: KEY="[a,b]" or KEY=a,b; '
    'nested lists/tuples: KEY="[(a,b),(c,d)]" (quote them, no spaces). Every KEY must already '
    'exist in the config, so a typo fails with the closest existing keys instead of being '
    'silently added; top-level Runner arguments the config leaves out (randomness, work_dir, '
    'model_wrapper_cfg, ...) are accepted too. To add a new key on purpose, prefix it with "+": '
    '+model.backbone.init_cfg.type=Pretrained creates the key and any dicts missing on its path.')


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one line: ``PROG: error: ...``, exit 2.

    The usage summary of the tools wraps over several lines; the error names the problem and
    points at ``--help`` instead of repeating it.
    """

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {_one_line(message)}; see {self.prog} --help\n')


class CfgOptionsAction(argparse.Action):
    """``--cfg-options KEY=VALUE ...`` kept as typed, for :func:`parse_cfg_options` to convert.

    mmengine's ``DictAction`` converts while parsing, which needs mmengine imported before
    ``--help`` can answer; this action only checks the ``KEY=VALUE`` form and collects the
    pairs (repeated flags add up), and :func:`load_config` converts them with ``DictAction``
    itself, so values mean exactly what they mean in OpenMMLab's tools.
    """

    def __call__(self, parser, namespace, values, option_string=None):
        pairs = list(getattr(namespace, self.dest, None) or [])
        for pair in values:
            key, sep, _ = pair.partition('=')
            if not sep or not key:
                parser.error(f'argument {option_string}: expected KEY=VALUE pairs, got {pair!r} '
                             f'(e.g. {option_string} train_cfg.max_epochs=5)')
            pairs.append(pair)
        setattr(namespace, self.dest, pairs)


def add_cfg_options_arg(parser, help=CFG_OPTIONS_HELP):
    """Add ``--cfg-options`` (collected as ``KEY=VALUE`` strings; see :class:`CfgOptionsAction`)."""
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction, metavar='KEY=VALUE',
                        help=help)


def parse_cfg_options(pairs):
    """``['KEY=VALUE', ...]`` → ``{KEY: value}``, converted as mmengine's ``DictAction`` does.

    Values become ints, floats, booleans, None, lists (``a,b`` or ``[a,b]``) and tuples
    (``(a,b)``), nested as written; anything else stays a string. A later pair for the same key
    wins.
    """
    from mmengine.config import DictAction
    action = DictAction(option_strings=['--cfg-options'], dest='cfg_options')
    namespace = argparse.Namespace()
    for pair in pairs:
        try:
            action(None, namespace, [pair])
        except (AssertionError, ValueError) as err:  # e.g. "Imbalanced brackets exist in ..."
            raise UsageError(f'--cfg-options {pair!r} cannot be read ({_one_line(err)}); write '
                             f'lists as KEY="[a,b]" and nested ones as KEY="[(a,b),(c,d)]", with '
                             f'balanced brackets.') from err
    return getattr(namespace, 'cfg_options', None) or {}


def add_common_args(parser):
    """Add the flags both scripts take: --work-dir, --cfg-options, --launcher, --local-rank."""
    parser.add_argument(
        '--work-dir', help='folder for logs, checkpoints and dumped configs (default: '
        'the config\'s work_dir, else work_dirs/<config file name without .py>)')
    add_cfg_options_arg(parser)
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
        help='job launcher: none (one process), pytorch (torchrun; tools/dist_train.sh uses it) '
        'or slurm (srun). Without CUDA the gloo backend is used, so distributed runs work on CPU.')
    # torch.distributed.launch passes --local-rank (torch>=2) or --local_rank (older); torchrun
    # sets the LOCAL_RANK environment variable instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=None, metavar='N',
                        help='rank of this process on its node (set by torch.distributed.launch;'
                        ' exported as LOCAL_RANK; torchrun sets LOCAL_RANK itself)')


def set_local_rank(args):
    """Export ``LOCAL_RANK`` from ``--local-rank`` (given) or keep the launcher's (default 0)."""
    if args.local_rank is not None:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    else:
        os.environ.setdefault('LOCAL_RANK', '0')


# ----------------------------------------------------------------------------- config

def load_config(path, cfg_options=None):
    """Read the config file and merge the (checked) ``--cfg-options`` into it.

    ``cfg_options`` is what :class:`CfgOptionsAction` collected (a list of ``KEY=VALUE``
    strings, converted by :func:`parse_cfg_options`) or a dict of values already typed.
    Importing ``common`` first makes its registrations and the mmcv fallback take effect for
    every config, also one that does not name it in ``custom_imports``.
    """
    if not osp.isfile(path):  # before the heavy imports: a typo'd path answers at once
        raise UsageError(f'Config file {path!r} does not exist{_similar_files_hint(path)} '
                         f'(relative paths are resolved from {os.getcwd()!r}).')
    import common  # noqa: F401  mmcv fallback, safe checkpoint loading, shared registries
    from mmengine.config import Config
    if isinstance(cfg_options, (list, tuple)):
        cfg_options = parse_cfg_options(cfg_options)
    try:
        cfg = Config.fromfile(path)
    except (FileNotFoundError, KeyError, SyntaxError, ImportError) as err:
        raise UsageError(f'Could not read config {path!r}: {_one_line(err)}') from err
    if cfg_options:
        cfg.merge_from_dict(check_cfg_options(cfg, cfg_options))
        # Config.fromfile imported the file's custom_imports; the options may have changed them
        if cfg.get('custom_imports'):
            from mmengine.utils import import_modules_from_strings
            import_modules_from_strings(**cfg.custom_imports)
    return cfg


def config_scope(cfg, default=None):
    """A context that enters the config's registry scope (``default_scope``, else ``default``),
    whatever scope the process is in (tests, notebooks, a tool that read another config)."""
    from mmengine.registry import DefaultScope
    return DefaultScope.overwrite_default_scope(cfg.get('default_scope') or default)


def _similar_files_hint(path):
    folder = osp.dirname(path) or '.'
    if not osp.isdir(folder):
        return f'; its folder {folder!r} does not exist either'
    names = [n for n in os.listdir(folder) if n.endswith('.py')]
    close = difflib.get_close_matches(osp.basename(path), names, n=3, cutoff=0.6)
    if close:
        return '; similar files there: ' + ', '.join(osp.join(folder, n) for n in close)
    return ''


def _runner_arguments():
    """Top-level config keys a Runner reads even when a config leaves them out."""
    from mmengine.runner import FlexibleRunner, Runner
    names = set()
    for runner_cls in (Runner, FlexibleRunner):
        names |= set(inspect.signature(runner_cls.__init__).parameters) - {'self', 'cfg'}
    # read with cfg.get() by Runner.from_cfg / Runner.wrap_model
    return names | {'runner_type', 'model_wrapper_cfg', 'find_unused_parameters', 'sync_bn'}


def is_mapping(value):
    """True for dicts, ConfigDicts and the Config object itself."""
    return isinstance(value, dict) or (hasattr(value, 'keys') and hasattr(value, 'items'))


def _flat_keys(node, prefix='', depth=5):
    """Dotted paths of all keys in ``node`` (dicts and lists), up to ``depth`` levels deep."""
    keys = []
    if depth == 0:
        return keys
    items = (node.items() if is_mapping(node) else
             enumerate(node) if isinstance(node, (list, tuple)) else ())
    for key, value in items:
        path = f'{prefix}{key}'
        keys.append(path)
        keys.extend(_flat_keys(value, path + '.', depth - 1))
    return keys


def _closest_keys(cfg, key, depth, siblings):
    """The existing keys a mistyped ``key`` most likely meant; ``key``'s part ``depth`` is wrong."""
    parts = key.split('.')
    every = _flat_keys(cfg)
    known = set(every)
    parent = '.'.join(parts[:depth]) + '.' if depth else ''
    rest = '.'.join(parts[depth + 1:])
    found = []
    for sibling in difflib.get_close_matches(parts[depth], siblings, n=3, cutoff=0.6):
        fixed = parent + sibling + ('.' + rest if rest else '')
        found.append(fixed if fixed in known else parent + sibling)
    found += [k for k in every if k.endswith('.' + key)][:3]
    found += difflib.get_close_matches(key, every, n=3, cutoff=0.75)
    return list(dict.fromkeys(found))[:5]


def check_cfg_options(cfg, options):
    """Return ``options`` ready for ``Config.merge_from_dict``, refusing keys that do not exist.

    A key is valid when every dotted part names an existing dict key or list index, or when its
    first part is a Runner argument missing from the config. A key written with a ``+`` prefix
    is an explicit addition: it may create the key and any dicts missing on its path (but not
    descend into a value that is not a dict).
    """
    runner_args = _runner_arguments()
    checked = {}
    for raw_key, value in options.items():
        add = raw_key.startswith('+')
        key = raw_key[1:] if add else raw_key
        parts = key.split('.')
        if not key or not all(parts):
            raise UsageError(f'--cfg-options has an empty key part in {raw_key!r}; write '
                             f'dotted paths like model.backbone.depth=50.')
        if parts[0] not in cfg and parts[0] in runner_args:
            checked[key] = value
            continue
        node = cfg
        for i, part in enumerate(parts):
            is_last = i == len(parts) - 1
            if is_mapping(node) and part in node:
                node = node[part]
                continue
            if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
                continue
            if is_mapping(node) and (add or (part == '_delete_' and is_last)):
                break  # "+": this part and the dicts below it are created
            where = '.'.join(parts[:i])
            if not (is_mapping(node) or isinstance(node, (list, tuple))):
                raise UsageError(
                    f'--cfg-options key {raw_key!r}: {where!r} is {node!r} '
                    f'({type(node).__name__}), not a dict, so it has no key {part!r}. Set '
                    f'{where!r} itself instead (e.g. {where}="dict(...)").')
            siblings = ([str(k) for k in node] if is_mapping(node) else
                        [str(j) for j in range(len(node))])
            close = _closest_keys(cfg, key, i, siblings)
            hint = (f'Closest existing keys: {", ".join(close)}.' if close else
                    f'Keys at that level: {", ".join(siblings[:12]) or "(none)"}.')
            place = f'{where!r} has no key' if where else 'the config has no top-level key'
            raise UsageError(
                f'--cfg-options key {raw_key!r} does not exist in the config: {place} '
                f'{part!r}. {hint} Nothing is added silently; to add a new key on purpose, write '
                f'it with a leading "+" (--cfg-options +{key}=...).')
        checked[key] = value
    return checked


def set_work_dir(cfg, work_dir, config_path):
    """``--work-dir`` > the config's ``work_dir`` > ``work_dirs/<config stem>``."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(config_path))[0])


def check_local_file(path, what):
    """Fail early for a local file that does not exist (URLs and ``scheme://`` paths pass)."""
    if path is None or '://' in path:
        return
    if not osp.isfile(path):
        raise RunError(f'{what} {path!r} does not exist (relative paths are resolved from '
                       f'{os.getcwd()!r}).')


def check_at_least_one(parser, args, names):
    """``parser.error`` for any of the integer options ``names`` (attribute names) given below 1;
    options left at None pass."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} must be at least 1, got {value}')


def check_export_paths(parser, args):
    """The export tools' CHECKPOINT / OUT_DIR rules: the checkpoint is an existing file, and an
    existing OUT_DIR is replaced only with ``--overwrite`` (a ``parser.error`` otherwise)."""
    if not osp.isfile(args.checkpoint):
        parser.error(f'CHECKPOINT {args.checkpoint!r} does not exist or is not a file (relative '
                     f'paths are resolved from {os.getcwd()!r})')
    if osp.lexists(args.out_dir) and not args.overwrite:
        parser.error(f'OUT_DIR {args.out_dir!r} already exists; pass --overwrite to replace it '
                     f'or choose another folder')


# ----------------------------------------------------------------------------- registries

def resolve_type(registry, type_, scope):
    """The class a config's ``type`` names, looked up the way the Runner will (None if unknown)."""
    if not isinstance(type_, str):
        return type_
    with registry.switch_scope_and_registry(scope) as reg:
        return reg.get(type_)


def init_signature_params(cls):
    """Names of the ``__init__`` arguments of ``cls`` and, through ``**kwargs``, of its bases."""
    names = set()
    for klass in inspect.getmro(cls):
        if '__init__' not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        names |= {n for n, p in params.items()
                  if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            break
    names.discard('self')
    return names


# ----------------------------------------------------------------------------- launching

def _cuda_available():
    import torch
    return torch.cuda.is_available()


def prepare_launcher(cfg, launcher):
    """Record the launcher and, without CUDA, make distributed runs use gloo on CPU.

    mmengine's own process-group setup calls ``torch.cuda.set_device`` and its DDP wrapper pins
    ``device_ids=[LOCAL_RANK]``; both fail on a CPU-only machine. So for ``launcher != 'none'``
    without CUDA we force ``env_cfg.dist_cfg.backend='gloo'``, let DDP wrap the CPU model
    (``device_ids=None``) and start the process group ourselves in :func:`build_runner`.
    """
    cfg.launcher = launcher
    if launcher == 'none' or _cuda_available():
        return
    # (Config.setdefault stores a converted copy, so assign and read back instead)
    if cfg.get('env_cfg') is None:
        cfg.env_cfg = dict()
    if cfg.env_cfg.get('dist_cfg') is None:
        cfg.env_cfg.dist_cfg = dict()
    cfg.env_cfg.dist_cfg.backend = 'gloo'

    import mmengine.model  # noqa: F401  registers the model wrappers
    from mmengine.registry import MODEL_WRAPPERS
    from torch.nn.parallel import DistributedDataParallel
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
        return
    wrapper_cls = resolve_type(MODEL_WRAPPERS, wrapper.get('type', 'MMDistributedDataParallel'),
                               cfg.get('default_scope'))
    if (inspect.isclass(wrapper_cls) and issubclass(wrapper_cls, DistributedDataParallel)
            and 'device_ids' not in wrapper):
        wrapper['device_ids'] = None


def _init_cpu_process_group(launcher, dist_cfg):
    """Start the gloo process group from the launcher's environment variables."""
    import subprocess

    import torch.distributed as dist
    if dist.is_initialized():
        return
    needed = ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
    if launcher == 'slurm':
        needed = ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST')
        if all(k in os.environ for k in needed):
            nodes = os.environ['SLURM_NODELIST']
            os.environ.setdefault('MASTER_ADDR', subprocess.getoutput(
                f'scontrol show hostname {nodes} | head -n1').strip() or '127.0.0.1')
            os.environ.setdefault('MASTER_PORT', str(dist_cfg.get('port') or 29500))
            os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
            os.environ['RANK'] = os.environ['SLURM_PROCID']
            os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    missing = [k for k in needed if k not in os.environ]
    if missing:
        raise UsageError(
            f'--launcher {launcher} needs the environment variables {", ".join(missing)}, which '
            f'the launcher sets; start the script with tools/dist_train.sh / dist_test.sh '
            f'(torchrun) or srun, or use --launcher none for a single process.')
    kwargs = {k: v for k, v in dist_cfg.items() if k not in ('backend', 'port')}
    if kwargs.get('timeout') is not None:
        kwargs['timeout'] = timedelta(seconds=kwargs['timeout'])
    dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                            world_size=int(os.environ['WORLD_SIZE']), **kwargs)


def shard_worker(launcher, device=None):
    """``(rank, world_size, device, barrier)`` of a feature-writing tool (precompute, collect,
    pairs): one process (``launcher='none'``), or one torchrun worker per GPU
    (``'pytorch'``: NCCL with CUDA, gloo without; its device ``cuda:LOCAL_RANK``). ``device``:
    the tool's ``--device`` (default CUDA when available); ``barrier`` is None for one process."""
    import torch
    import torch.distributed as dist
    rank, world_size, barrier = 0, 1, None
    if launcher == 'pytorch':
        missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
                   if k not in os.environ]
        if missing:
            raise UsageError(f'--launcher pytorch needs {", ".join(missing)} in the '
                             f'environment: start the tool with torchrun.')
        if not dist.is_initialized():
            dist.init_process_group('nccl' if torch.cuda.is_available() else 'gloo')
        rank, world_size = dist.get_rank(), dist.get_world_size()
        barrier = dist.barrier if world_size > 1 else None
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device == 'cuda' and launcher == 'pytorch':
        device = f'cuda:{os.environ.get("LOCAL_RANK", "0")}'
    return rank, world_size, device, barrier


def close_distributed():
    """Tear the process group down before the interpreter exits.

    Left to interpreter shutdown, gloo's process group is destroyed while other objects are
    being finalised, and a rank occasionally aborts there ("terminate called without an active
    exception", SIGABRT) after the work is done, failing a finished run. A no-op for one process.
    """
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def build_runner(cfg):
    """Build the Runner the config asks for (``runner_type`` or mmengine's ``Runner``)."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if cfg.get('launcher', 'none') != 'none' and not _cuda_available():
        _init_cpu_process_group(cfg.launcher, cfg.env_cfg.dist_cfg)
    try:
        runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    except KeyError as err:
        if 'registry' in str(err):  # a config `type` that no registry knows
            raise RunError(_one_line(err)) from err
        raise
    if runner.distributed:
        backend = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('backend', 'nccl')
        print(f'{osp.basename(sys.argv[0]) or "tool"}: rank {runner.rank} of '
              f'{runner.world_size} ready (launcher {cfg.launcher}, backend {backend})',
              flush=True)
    return runner


# ----------------------------------------------------------------------------- errors

def _one_line(err):
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return ' '.join(text.split())


def _user_error_classes():
    """Errors a user can cause: ours, config lookups, and the toolkit's own error classes."""
    from common.io import CheckpointLoadError, UnsafeCheckpointError
    from common.io.pretrained_init import PretrainedLoadError
    from common.mmcv_compat import MissingMmcvOpError
    return (CheckpointLoadError, UnsafeCheckpointError, PretrainedLoadError, MissingMmcvOpError)


def _is_toolkit_error(err):
    """An exception class defined in the ``common`` package is a deliberate, user-facing error."""
    return type(err).__module__.split('.')[0] == 'common'


def run_reporting(run, args, errors, catch=(ValueError, )):
    """``run(args)``, with the data errors a tool knows turned into :class:`RunError` (one
    paragraph on stderr, exit code 1, no traceback). ``errors``: ``'package.module:ClassName'``
    strings, imported only once something was raised, so the tool's start-up stays light."""
    try:
        return run(args)
    except catch as err:
        import importlib
        known = tuple(getattr(importlib.import_module(module), name)
                      for module, name in (e.split(':') for e in errors))
        if isinstance(err, known):
            raise RunError(str(err)) from err
        raise


def run_cli(prog, main, argv=None):
    """Run ``main(argv)`` and turn user-caused errors into one paragraph on stderr.

    Returns the exit code: 0, 1 (run-time error the user can fix) or 2 (usage error).
    Set ``DIFFTEACHER_TRACEBACK=1`` to let the original exception propagate.
    """
    if os.environ.get(TRACEBACK_ENV) == '1':
        main(argv)
        return 0
    try:
        main(argv)
    except UsageError as err:
        print(f'{prog}: error: {_one_line(err)}', file=sys.stderr)
        return 2
    except RunError as err:
        print(f'{prog}: error: {_one_line(err)}', file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - filtered just below
        if not (isinstance(err, _user_error_classes()) or _is_toolkit_error(err)):
            raise
        print(f'{prog}: error: {_one_line(err)} (set {TRACEBACK_ENV}=1 for the traceback)',
              file=sys.stderr)
        return 1
    return 0
