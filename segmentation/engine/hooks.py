"""Hooks for the face-parsing runs."""
import os.path as osp

import mmcv
import mmengine.fileio as fileio
from mmengine.runner import BaseLoop
from mmseg.engine.hooks import SegVisualizationHook
from mmseg.registry import HOOKS


def _training_iter(runner):
    """The training iteration, or 0 when no training loop was ever built (test or val only).

    ``runner.iter`` builds the training loop on first access (its dataloader and dataset
    included), so it is only read when that loop already exists.
    """
    loop = getattr(runner, '_train_loop', None)
    return loop.iter if isinstance(loop, BaseLoop) else 0


@HOOKS.register_module()
class SegOverlayVisualizationHook(SegVisualizationHook):
    """mmseg's ``SegVisualizationHook`` that also works in a test-only run.

    The stock hook tags every drawing with ``runner.iter``; in ``tools/test.py`` that property
    builds the *training* loop and its dataset, which fails when the train split is not on the
    machine (and needlessly scans it when it is). This hook takes the iteration from a training
    loop that already exists and 0 otherwise; everything else (``draw``, ``interval``, ``show``,
    the visualizer's ``save_dir``) is unchanged. Overlays are written by the visualizer as
    ``<save_dir>/vis_data/vis_image/<mode>_<image file>_<iter>.png``.
    """

    def _after_iter(self, runner, batch_idx, data_batch, outputs, mode='val'):
        if self.draw is False or mode == 'train':
            return
        if not self.every_n_inner_iters(batch_idx, self.interval):
            return
        step = _training_iter(runner)
        for output in outputs:
            img_path = output.img_path
            img = mmcv.imfrombytes(
                fileio.get(img_path, backend_args=self.backend_args), channel_order='rgb')
            self._visualizer.add_datasample(
                f'{mode}_{osp.basename(img_path)}', img, data_sample=output, show=self.show,
                wait_time=self.wait_time, step=step)
