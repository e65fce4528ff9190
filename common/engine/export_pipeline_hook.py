"""``ExportDiffusersPipelineHook``: after training, save the trained diffusion model as a diffusers
pipeline folder (``unet/`` + ``scheduler/`` + ``model_index.json``) that
``DiffusionTeacher(pretrained=folder)`` loads exactly like a downloaded teacher.

The model must offer ``export_pipeline()`` returning a diffusers pipeline (``DDPMTrainer`` does:
its EMA UNet when EMA is on). When mmengine's ``EMAHook`` is registered, its averaged copy of the
model is exported instead.

The folder is written all or nothing by ``common.io.atomic_folder`` (the toolkit's one folder
writer): an existing folder is replaced only once the new one is complete and on disk.
"""
import os.path as osp
import time

import numpy as np
import torch
from mmengine.dist import master_only
from mmengine.hooks import EMAHook, Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from common.io import atomic_path
from common.io.atomic_folder import save_pretrained_atomically


def save_pipeline_atomically(pipeline, out_dir):
    """``pipeline.save_pretrained`` into ``out_dir``, all or nothing (see common.io.atomic_folder)."""
    return save_pretrained_atomically(pipeline, out_dir, overwrite=True)


@torch.no_grad()
def sample_grid(unet, scheduler, num_samples=16, steps=50, eta=1.0, seed=0, scale=2):
    """A ``[H, W, 3]`` uint8 grid of ``num_samples`` DDIM samples (``steps`` steps, the betas of
    ``scheduler``), square-ish, each image enlarged ``scale`` times (nearest).

    ``eta=1`` (stochastic, DDPM-like) is the default: a briefly trained model's deterministic
    (``eta=0``) samples drift to grey, noisy blobs that hide what it learned.
    """
    from diffusers import DDIMPipeline, DDIMScheduler
    pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=num_samples, generator=torch.Generator().manual_seed(int(seed)),
                  eta=float(eta), num_inference_steps=int(steps), output_type='np',
                  return_dict=False)[0]
    images = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)  # [N, H, W, C]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    n, h, w, c = images.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    pad = 2
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 128, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, cols)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h,
             pad + col * (w + pad):pad + col * (w + pad) + w] = img
    return grid


@HOOKS.register_module()
class ExportDiffusersPipelineHook(Hook):
    """Save the trained model as a diffusers pipeline folder after training (main process only).

    Args:
        out_dir (str | None): the pipeline folder; default ``<work_dir>/pipeline``. A relative
            path is relative to the current directory.
        num_samples (int): DDIM samples drawn into ``samples_path`` as a PNG grid after the
            export so that a person can see what the model learned; 0 turns it off.
        sample_steps (int): DDIM steps of those samples.
        sample_eta (float): DDIM eta of those samples (1: stochastic, 0: deterministic).
        sample_seed (int): seed of the samples' noise.
        samples_path (str | None): default ``<work_dir>/samples.png``.
    """

    priority = 'LOW'

    def __init__(self, out_dir=None, num_samples=16, sample_steps=50, sample_eta=1.0,
                 sample_seed=0, samples_path=None):
        self.out_dir = out_dir
        self.num_samples = int(num_samples)
        self.sample_steps = int(sample_steps)
        self.sample_eta = float(sample_eta)
        self.sample_seed = sample_seed
        self.samples_path = samples_path

    @staticmethod
    def source_model(runner):
        """The model to export: ``EMAHook``'s averaged copy when there is one, else the model."""
        for hook in runner.hooks:
            if isinstance(hook, EMAHook) and getattr(hook, 'ema_model', None) is not None:
                return hook.ema_model.module
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    @master_only
    def after_train(self, runner):
        model = self.source_model(runner)
        if not callable(getattr(model, 'export_pipeline', None)):
            raise TypeError(
                f'ExportDiffusersPipelineHook needs a model with export_pipeline() (such as '
                f'DDPMTrainer); {type(model).__name__} has none. Remove the hook from '
                f'custom_hooks or train a diffusion model.')
        out_dir = self.out_dir or osp.join(runner.work_dir, 'pipeline')
        pipeline = model.export_pipeline()
        out_dir = save_pipeline_atomically(pipeline, out_dir)
        runner.logger.info(f'Exported the diffusers pipeline to {out_dir} (load it with '
                           f"DiffusionTeacher(pretrained='{out_dir}', ...)).")
        if self.num_samples > 0:
            self.save_samples(pipeline, self.samples_path
                              or osp.join(runner.work_dir, 'samples.png'), runner.logger)

    def save_samples(self, pipeline, path, logger):
        from PIL import Image
        start = time.perf_counter()
        grid = sample_grid(pipeline.unet, pipeline.scheduler, self.num_samples,
                           self.sample_steps, self.sample_eta, self.sample_seed)
        with atomic_path(path) as tmp:
            Image.fromarray(grid).save(tmp, format='PNG')
        logger.info(f'Saved {self.num_samples} samples ({self.sample_steps} DDIM steps, '
                    f'eta={self.sample_eta:g}, {time.perf_counter() - start:.1f} s) to '
                    f'{osp.abspath(path)}.')
