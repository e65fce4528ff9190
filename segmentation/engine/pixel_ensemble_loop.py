"""``PixelEnsembleTrainLoop``: ddpm-segmentation's training as an mmengine train loop.

``tools/train.py CONFIG`` with ``train_cfg = dict(type='PixelEnsembleTrainLoop', ...)`` (1) runs
the segmentor's frozen feature extractor once over the training images and keeps their
native-resolution maps in a ``NativeFeatureStore`` under the work dir (resumable: stored images
are skipped on a re-run), (2) trains the batched pixel-MLP ensemble on pixel batches sampled from
the store (``PixelSampler``; the reference's Adam, batch 64 and early stopping), and (3) saves the
ensemble through the runner's own checkpointing (``CheckpointHook`` at the end of the single
"epoch": ``epoch_1.pth``, read by ``tools/test.py CONFIG CKPT``). The one rule: the whole
procedure is ONE loop epoch: the hooks see ``before_train_epoch`` / ``after_train_epoch`` once,
and the config's ``CheckpointHook`` must be ``by_epoch=True, interval=1``.

The training masks get the reference's "fewer than 20 pixels -> ignore_label" rule
(``drop_small_classes``) after resizing to the feature resolution, as ``prepare_data`` does.
"""
import json
import os.path as osp

import numpy as np
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import LOOPS
from mmengine.runner import BaseLoop

from common.progress import progress


class PixelLoopConfigError(ValueError):
    """A setting of the pixel-ensemble loop does not fit the model or data."""


@LOOPS.register_module()
class PixelEnsembleTrainLoop(BaseLoop):
    """Extract native features once, train the pixel ensemble, checkpoint through the runner.

    Args:
        runner: the Runner.
        dataloader (dict | DataLoader): the training images (``DDPMSegDataset`` split ``train``,
            a pipeline that resizes image and mask to the extractor's ``image_size`` and packs
            them). Batch size = images per extractor call.
        feature_dir (str): the native feature store, relative to the work dir (or absolute).
        sampler (dict): ``PixelSampler`` arguments (``batch_size=64``, ``pixels_per_image``,
            ``class_balanced``, ``buffer_pixels``, ``cache_images``).
        max_epochs (int): the reference's 100 epochs at most.
        patience (int): the reference's 50 iterations without a better batch loss.
        start_epoch (int): early stopping counts from this (0-based) epoch on (the reference: 4).
        seed (int): the pixel selection and shuffle seed (epoch e uses seed + e).
        min_pixels (int): classes with fewer pixels in a training mask become ``ignore_label``.
        log_interval (int): log the per-model losses every this many iterations (0: never).

    The learning rate is the one of the config's ``optim_wrapper`` (the reference: Adam 1e-3);
    the loop builds its own Adam over the ensemble, which freezes models as they stop.
    """

    def __init__(self, runner, dataloader, feature_dir='native_features', sampler=None,
                 max_epochs=100, patience=50, start_epoch=4, seed=0, min_pixels=20,
                 log_interval=0):
        super().__init__(runner, dataloader)
        self.feature_dir = feature_dir
        self.sampler_cfg = dict(dict(batch_size=64) if sampler is None else sampler)
        for key in ('store', 'masks', 'ignore_label', 'seed'):
            if key in self.sampler_cfg:
                raise PixelLoopConfigError(
                    f'PixelEnsembleTrainLoop: sampler.{key} is set by the loop itself (the '
                    f'store under the work dir, the training masks, the dataset\'s ignore label, '
                    f'the loop\'s seed); remove it from train_cfg.sampler.')
        self.max_train_epochs = int(max_epochs)
        self.patience = int(patience)
        self.start_epoch = int(start_epoch)
        self.seed = int(seed)
        self.min_pixels = int(min_pixels)
        self.log_interval = int(log_interval)
        self._epoch = 0
        self._iter = 0
        self.report = None

    # mmengine reads these from a train loop (hooks, message hub, checkpoints)
    @property
    def max_epochs(self):
        return 1

    @property
    def max_iters(self):
        return 1

    @property
    def epoch(self):
        return self._epoch

    @property
    def iter(self):
        return self._iter

    def _model(self):
        model = self.runner.model
        model = model.module if is_model_wrapper(model) else model
        for attr in ('extractor', 'head', 'data_preprocessor'):
            if not hasattr(model, attr):
                raise PixelLoopConfigError(
                    f'PixelEnsembleTrainLoop trains a DiffusionPixelSegmentor (extractor + '
                    f'pixel-ensemble head), but the model {type(model).__name__} has no '
                    f'`{attr}`. Set model.type=\'DiffusionPixelSegmentor\' in the config.')
        return model

    def _store_root(self):
        return self.feature_dir if osp.isabs(self.feature_dir) else osp.join(
            self.runner.work_dir, self.feature_dir)

    def _key(self, img_path):
        root = getattr(self.dataloader.dataset, 'data_root', None) or osp.dirname(img_path)
        return osp.splitext(osp.relpath(img_path, root))[0].replace(osp.sep, '/')

    def extract(self, model):
        """Write the missing native maps into the store; returns (store, masks by key)."""
        from segmentation.datasets.ddpm_seg import drop_small_classes
        from segmentation.pixel_features import NativeFeatureStore
        extractor = model.extractor
        ignore = int(getattr(self.dataloader.dataset, 'ignore_index', 255))
        store = NativeFeatureStore(self._store_root(), extractor.settings())
        masks, written = {}, 0
        for data_batch in progress(self.dataloader, 'native features',
                                   total=len(self.dataloader)):
            data = model.data_preprocessor(data_batch, False)
            inputs, samples = data['inputs'], data['data_samples']
            todo = []
            for i, sample in enumerate(samples):
                key = self._key(sample.img_path)
                if 'gt_sem_seg' not in sample:
                    raise PixelLoopConfigError(
                        f'PixelEnsembleTrainLoop: the training sample {sample.img_path} has no '
                        'gt_sem_seg; expected the pipeline to load the mask (LoadNpyAnnotations) '
                        'and pack it (PackSegInputs).')
                mask = sample.gt_sem_seg.data[0].cpu().numpy()
                masks[key] = drop_small_classes(mask, ignore, self.min_pixels)
                if not store.has(key):
                    todo.append((key, inputs[i]))
            if todo:
                written += len(store.write(extractor, todo, batch_size=len(todo),
                                           show_progress=False))
        print_log(f'PixelEnsembleTrainLoop: native features of {len(masks)} training images in '
                  f'{store.root} ({written} computed now, {len(masks) - written} found).',
                  logger='current')
        return store, masks, ignore

    def run(self):
        from segmentation.models.pixel_ensemble import train_ensemble
        from segmentation.pixel_features import PixelSampler
        runner = self.runner
        runner.call_hook('before_train')
        runner.call_hook('before_train_epoch')
        model = self._model()
        store, masks, ignore = self.extract(model)
        sampler = PixelSampler(store, masks, ignore, seed=self.seed, **self.sampler_cfg)

        def batches(epoch):
            sampler.set_epoch(epoch)
            return sampler

        lr = runner.optim_wrapper.optimizer.param_groups[0]['lr']
        result = train_ensemble(model.head, batches, lr=lr, max_epochs=self.max_train_epochs,
                                patience=self.patience, start_epoch=self.start_epoch,
                                ignore_index=ignore, log_interval=self.log_interval)
        self._iter = result['iterations']
        self.report = dict(
            images=len(masks), iterations=result['iterations'], lr=lr,
            stop_epoch=result['stop_epoch'].tolist(), stop_iter=result['stop_iter'].tolist(),
            last_loss=[None if np.isnan(v) else v for v in result['last_loss'].tolist()])
        print_log('PixelEnsembleTrainLoop: ' + json.dumps(self.report), logger='current')
        runner.message_hub.update_info('pixel_ensemble_report', self.report)
        runner.call_hook('after_train_epoch')  # CheckpointHook(by_epoch=True) saves epoch_1.pth
        self._epoch = 1
        runner.call_hook('after_train')
        model.head.eval()
        return runner.model
