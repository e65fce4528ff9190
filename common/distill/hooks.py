"""Training hooks for timestep policies: entropy decay and the chosen-timestep histogram."""
import json
import os

import numpy as np
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ..io.atomic import atomic_path


def _sampler(runner):
    model = runner.model.module if hasattr(runner.model, 'module') else runner.model
    return getattr(model, 'timestep_sampler', None)


@HOOKS.register_module()
class EntropyDecayHook(Hook):
    """Linearly decay the policy's entropy weight from its initial value to 0 at ``end_epoch``.

    Before train epoch e the weight is ``init * max(0, 1 - e / end_epoch)`` (RepFusion: 0.1 → 0
    by epoch 100 of 200).
    """

    def __init__(self, end_epoch):
        if end_epoch <= 0:
            raise ValueError(f'EntropyDecayHook end_epoch must be > 0, got {end_epoch}')
        self.end_epoch = end_epoch
        self.initial = None

    def before_train_epoch(self, runner):
        sampler = _sampler(runner)
        if sampler is None or not hasattr(sampler, 'entropy_weight'):
            raise RuntimeError('EntropyDecayHook needs a model with a learned timestep_sampler '
                               '(e.g. ReinforceTimestepPolicy); remove the hook otherwise.')
        if self.initial is None:
            self.initial = sampler.entropy_weight
        sampler.entropy_weight = self.initial * max(0.0, 1 - runner.epoch / self.end_epoch)
        runner.message_hub.update_scalar('train/entropy_weight', sampler.entropy_weight)


@HOOKS.register_module()
class TimestepHistogramHook(Hook):
    """Histogram of the timesteps the sampler chose, per epoch.

    Logs a one-line summary (quartiles, most chosen bin) after each epoch and keeps every
    epoch's histogram in ``<work_dir>/timestep_histogram.json``; at the end of training draws
    them as a heat map ``timestep_histogram.png`` (epochs × timestep bins). The histograms so far
    travel in the checkpoint (``timestep_histogram``), so a resumed run's JSON and heat map still
    start at epoch 1.
    """

    priority = 'LOW'

    def __init__(self, num_bins=20):
        self.num_bins = num_bins
        self.history = []
        self._epoch = []

    def before_save_checkpoint(self, runner, checkpoint):
        checkpoint['timestep_histogram'] = [dict(h) for h in self.history]

    def after_load_checkpoint(self, runner, checkpoint):
        if getattr(runner, '_resume', False):
            self.history = [dict(h) for h in checkpoint.get('timestep_histogram', [])]

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        sampler = _sampler(runner)
        if sampler is not None and sampler.last_timesteps is not None:
            self._epoch.append(sampler.last_timesteps.numpy())

    def after_train_epoch(self, runner):
        sampler = _sampler(runner)
        if sampler is None or not self._epoch:
            return
        t = np.concatenate(self._epoch)
        self._epoch = []
        edges = np.linspace(0, sampler.num_timesteps, self.num_bins + 1)
        counts, _ = np.histogram(t, bins=edges)
        self.history.append(dict(epoch=runner.epoch + 1, counts=counts.tolist(),
                                 edges=edges.tolist()))
        q = np.percentile(t, [25, 50, 75])
        top = int(np.argmax(counts))
        runner.logger.info(
            f'timesteps chosen in epoch {runner.epoch + 1}: quartiles {q[0]:.0f}/{q[1]:.0f}/'
            f'{q[2]:.0f}, most chosen bin [{edges[top]:.0f}, {edges[top + 1]:.0f}) with '
            f'{counts[top] / len(t):.0%}')
        if runner.rank == 0:
            path = os.path.join(runner.work_dir, 'timestep_histogram.json')
            with atomic_path(path) as tmp, open(tmp, 'w') as f:
                json.dump(self.history, f)

    def after_train(self, runner):
        if runner.rank != 0 or not self.history:
            return
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        counts = np.array([h['counts'] for h in self.history], dtype=float)
        counts /= counts.sum(axis=1, keepdims=True).clip(min=1)
        edges = self.history[0]['edges']
        fig, ax = plt.subplots(figsize=(7, 3 + 0.05 * len(counts)))
        im = ax.imshow(counts, aspect='auto', origin='lower', cmap='viridis',
                       extent=[edges[0], edges[-1], 0.5, len(counts) + 0.5])
        ax.set_xlabel('diffusion timestep')
        ax.set_ylabel('epoch')
        ax.set_title('timesteps chosen by the policy (share per epoch)')
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        path = os.path.join(runner.work_dir, 'timestep_histogram.png')
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format='png', dpi=100)
        plt.close(fig)
