"""``DiffusionPixelSegmentor``: ddpm-segmentation as an mmseg segmentor (frozen teacher + ensemble).

A frozen ``PixelFeatureExtractor`` (the diffusion teacher's decoder blocks at chosen timesteps)
gives every pixel its feature, the batched :class:`PixelMLPEnsemble` classifies it, and the
prediction is the majority vote of the models (``pred_sem_seg``), with the mean softmax
(``seg_logits``) and the Jensen-Shannon uncertainty (``js_uncertainty``) in each
``SegDataSample``. The one rule: the extractor is held outside the module tree, so a checkpoint
holds the ensemble only (``head.*``) and the teacher is always rebuilt from its own folder.

Training does not go through ``loss``: ``PixelEnsembleTrainLoop`` (segmentation/engine) extracts
the features once and trains the ensemble with the reference's schedule.
"""
import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.models.segmentors.base import BaseSegmentor
from mmseg.registry import MODELS
from torch import nn

from .pixel_ensemble import PixelMLPEnsemble, predict_labels


class SegmentorConfigError(ValueError):
    """A bad setting or input of the segmentor."""


@MODELS.register_module()
class DiffusionPixelSegmentor(BaseSegmentor):
    """Frozen pixel-feature extractor + pixel-MLP ensemble head.

    Args:
        backbone (dict | nn.Module): the ``PixelFeatureExtractor`` config (or a built one, with
            ``dim``, ``native(images)`` and ``sample(native, rows, cols, image_index)``).
        num_classes (int): the dataset's ``number_class``.
        num_models (int): ensemble size (the reference: 10).
        hidden ('auto' | (int, int)): MLP widths (:class:`PixelMLPEnsemble`).
        pixel_chunk (int): pixels classified per step at inference (memory: chunk x dim floats).
        data_preprocessor (dict): mmseg's ``SegDataPreProcessor``; the images must reach the
            extractor in [-1, 1] (mean = std = 127.5, RGB).
    """

    def __init__(self, backbone, num_classes, num_models=10, hidden='auto', pixel_chunk=8192,
                 data_preprocessor=None, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        extractor = MODELS.build(backbone) if isinstance(backbone, dict) else backbone
        for attr in ('dim', 'native', 'sample'):
            if not hasattr(extractor, attr):
                raise SegmentorConfigError(
                    f'DiffusionPixelSegmentor: the backbone {type(extractor).__name__} has no '
                    f'`{attr}`; expected a PixelFeatureExtractor (dim, native(images), '
                    'sample(native, rows, cols, image_index)). Fix model.backbone in the config.')
        if isinstance(extractor, nn.Module):
            extractor.eval().requires_grad_(False)
        self.__dict__['_extractor'] = extractor  # outside the module tree: not in state_dict()
        self.num_classes = num_classes
        self.pixel_chunk = int(pixel_chunk)
        self.head = PixelMLPEnsemble(int(extractor.dim), num_classes, num_models=num_models,
                                     hidden=hidden)

    @property
    def extractor(self):
        return self.__dict__['_extractor']

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if isinstance(self.extractor, nn.Module):
            self.extractor._apply(fn, *args, **kwargs)
        return self

    def train(self, mode=True):
        super().train(mode)
        if isinstance(self.extractor, nn.Module):
            self.extractor.eval()
        return self

    # -- mmseg's interface -----------------------------------------------------------------------
    @torch.no_grad()
    def extract_feat(self, inputs):
        """The extractor's native-resolution maps of a batch (list of tensors)."""
        if inputs.dim() != 4 or inputs.shape[-1] != inputs.shape[-2]:
            raise SegmentorConfigError(
                f'DiffusionPixelSegmentor: images of shape {tuple(inputs.shape)}; expected a '
                'batch of square images [B, 3, S, S] (the reference only accepts square '
                'images). Resize the images to the teacher resolution in the test pipeline.')
        return self.extractor.native(inputs)

    @torch.no_grad()
    def pixel_logits(self, native, image_index, size):
        """Ensemble logits ``[M, size*size, C]`` of one image, ``pixel_chunk`` pixels at a time."""
        device = self.head.fc1.weight.device
        total = size * size
        chunks = []
        for start in range(0, total, self.pixel_chunk):
            idx = torch.arange(start, min(start + self.pixel_chunk, total))  # CPU coordinates
            feats = self.extractor.sample(native, idx // size, idx % size, image_index)
            chunks.append(self.head(feats.to(device=device, dtype=torch.float32)))
        return torch.cat(chunks, dim=1)

    @torch.no_grad()
    def predict_maps(self, inputs):
        """Per image ``(vote [S, S], mean_softmax [C, S, S], js [S, S])`` at the input size."""
        self.head.eval()
        size = inputs.shape[-1]
        native = self.extract_feat(inputs)
        out = []
        for i in range(inputs.shape[0]):
            vote, mean, js = predict_labels(self.pixel_logits(native, i, size))
            out.append((vote.view(size, size), mean.t().reshape(-1, size, size),
                        js.view(size, size)))
        return out

    def encode_decode(self, inputs, batch_data_samples=None):
        """Mean softmax maps ``[B, C, S, S]``."""
        return torch.stack([mean for _, mean, _ in self.predict_maps(inputs)])

    def _forward(self, inputs, data_samples=None):
        return self.encode_decode(inputs, data_samples)

    def loss(self, inputs, data_samples):
        raise SegmentorConfigError(
            'DiffusionPixelSegmentor is not trained by gradient steps on image batches: train it '
            "with train_cfg = dict(type='PixelEnsembleTrainLoop', ...) (tools/train.py with a "
            'segmentation/configs/ddpm_seg config), which extracts the features once and trains '
            'the ensemble with the reference schedule.')

    def predict(self, inputs, data_samples=None):
        """``SegDataSample`` per image: ``pred_sem_seg`` (majority vote), ``seg_logits`` (mean
        softmax) and ``js_uncertainty``, resized to the ground truth's size when it differs
        (nearest for the vote and the uncertainty, bilinear for the probabilities)."""
        from mmseg.structures import SegDataSample
        maps = self.predict_maps(inputs)
        if data_samples is None:
            data_samples = [SegDataSample() for _ in maps]
        for sample, (vote, mean, js) in zip(data_samples, maps):
            target = None
            if 'gt_sem_seg' in sample:
                target = tuple(sample.gt_sem_seg.data.shape[-2:])
            elif 'ori_shape' in sample.metainfo:
                target = tuple(sample.metainfo['ori_shape'][:2])
            if target is not None and target != tuple(vote.shape):
                vote = F.interpolate(vote[None, None].float(), size=target,
                                     mode='nearest')[0, 0].long()
                js = F.interpolate(js[None, None], size=target, mode='nearest')[0, 0]
                mean = F.interpolate(mean[None], size=target, mode='bilinear',
                                     align_corners=False)[0]
            sample.set_data(dict(pred_sem_seg=PixelData(data=vote[None]),
                                 seg_logits=PixelData(data=mean),
                                 js_uncertainty=PixelData(data=js[None])))
        return data_samples
