"""``RNGStateHook``: random-number-generator states in the checkpoint, so a resumed run goes on
exactly as the uninterrupted run would have.

mmengine's resume restores weights, optimizer, schedulers and the message hub but re-seeds the
generators from the config's seed, so every random draw after a resume (teacher noise, timestep
policy samples, data augmentation, dropout) differs from the run that was never stopped. This
hook writes the torch (CPU and, when present, CUDA), numpy and python ``random`` states into every
checkpoint (``before_save_checkpoint``) and puts them back when training *resumes*
(``after_load_checkpoint`` keeps them, ``before_train`` applies them, after everything the runner
does on resume). ``load_from`` without resume (a warm start, fine-tuning) leaves the generators
alone.

The one rule: the states are stored as tensors, ints and strings only, so the checkpoint loads
through the safe loader (``common.io.load_checkpoint``, ``weights_only=True``).
Multi-process runs: checkpoints come from rank 0, so every rank resumes with rank 0's states:
exact when all ranks share one seed (mmengine's default, ``randomness.diff_rank_seed=False``);
with ``diff_rank_seed=True`` the hook leaves the generators as the runner seeded them and warns.
"""
import logging
import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

__all__ = ['RNGStateHook', 'capture_rng_state', 'restore_rng_state']

CHECKPOINT_KEY = 'rng_state'


def capture_rng_state():
    """The current torch / CUDA / numpy / python ``random`` states as safe-to-load data."""
    np_state = np.random.get_state(legacy=False)
    version, internal, gauss = random.getstate()
    state = dict(
        torch=torch.get_rng_state(),
        numpy=dict(bit_generator=np_state['bit_generator'],
                   key=torch.from_numpy(np_state['state']['key'].astype(np.int64)),
                   pos=int(np_state['state']['pos']), has_gauss=int(np_state['has_gauss']),
                   gauss=float(np_state['gauss'])),
        python=dict(version=int(version), internal=torch.tensor(internal, dtype=torch.int64),
                    gauss=gauss))
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state):
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state['torch'].cpu().to(torch.uint8))
    np_state = state['numpy']
    np.random.set_state(dict(
        bit_generator=np_state['bit_generator'],
        state=dict(key=np_state['key'].cpu().numpy().astype(np.uint32), pos=np_state['pos']),
        has_gauss=np_state['has_gauss'], gauss=np_state['gauss']))
    py = state['python']
    random.setstate((py['version'], tuple(int(v) for v in py['internal'].tolist()), py['gauss']))
    cuda = state.get('cuda')
    if cuda and torch.cuda.is_available():
        if len(cuda) != torch.cuda.device_count():
            print_log(f'RNGStateHook: the checkpoint has CUDA generator states for {len(cuda)} '
                      f'devices and this machine has {torch.cuda.device_count()}; CUDA states '
                      f'are not restored.', logger='current', level=logging.WARNING)
        else:
            torch.cuda.set_rng_state_all([s.cpu().to(torch.uint8) for s in cuda])


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save the generators' states in checkpoints; restore them when training resumes.

    Priority ``VERY_LOW``: on resume the states are applied after every other ``before_train``
    hook, right before the first training epoch, as in the uninterrupted run, where the
    checkpoint is written by the last ``after_train_epoch`` hook.
    """

    priority = 'VERY_LOW'

    def __init__(self):
        self._pending = None

    def before_save_checkpoint(self, runner, checkpoint):
        checkpoint[CHECKPOINT_KEY] = capture_rng_state()

    def after_load_checkpoint(self, runner, checkpoint):
        if not getattr(runner, '_resume', False):
            return  # load_from (warm start, fine-tuning): keep the run's own seeding
        state = checkpoint.get(CHECKPOINT_KEY)
        if state is None:
            print_log('RNGStateHook: the resumed checkpoint has no generator states (written '
                      'without this hook); random draws from here on differ from an '
                      'uninterrupted run.', logger='current', level=logging.WARNING)
            return
        if runner.world_size > 1 and runner._randomness_cfg.get('diff_rank_seed'):
            print_log('RNGStateHook: randomness.diff_rank_seed=True and the checkpoint holds '
                      'only rank 0\'s generator states; they are not restored, so random draws '
                      'after the resume differ from an uninterrupted run.', logger='current',
                      level=logging.WARNING)
            return
        self._pending = state

    def before_train(self, runner):
        if self._pending is not None:
            restore_rng_state(self._pending)
            self._pending = None
            print_log('RNGStateHook: restored the torch/numpy/random generator states of the '
                      'resumed checkpoint.', logger='current')
