"""Zero-shot semantic correspondence as an mmengine model: extract, match, map back.

The one rule: the model receives keypoints in original pixels and returns ``pred_kps`` in original
target pixels. In between it works in the frames the pipeline's ``ResizePair`` recorded
(``src_frame`` / ``trg_frame``, see :mod:`correspondence.datasets.transforms`): source keypoints
go into the source frame, the matcher predicts in the target frame, and the prediction is mapped
back with the target frame's inverse. So any extractor, matcher and frame can be combined and the
PCK metric (which applies its protocols' own frames) sees the same coordinates.

    model = dict(
        type='CorrespondenceModel',
        extractor=dict(type='PixelExtractor'),                 # [B,3,H,W] in [0,1] -> [B,C,h,w]
        matcher=dict(type='SoftArgmaxMatcher', window=5, beta=0.02),
        data_preprocessor=dict(type='PairDataPreprocessor'))  # uint8 -> float [0, 1]

Training (``mode='loss'``) is not part of this model yet: it comes with the DistillDIFT work
(issue #8).
"""
import numpy as np
import torch
from mmengine.model import BaseDataPreprocessor, BaseModel
from mmengine.registry import MODELS

from ..geometry import FrameTransform

SIDES = ('src', 'trg')


@MODELS.register_module()
class PairDataPreprocessor(BaseDataPreprocessor):
    """Move a collated batch of pairs to the model's device and turn the ``uint8`` images of
    ``inputs['src']`` / ``inputs['trg']`` (a ``[B, 3, H, W]`` tensor or a list of ``[3, H, W]``)
    into float ``[0, 1]`` (``/ 255``). Normalisation (ImageNet mean/std, [-1, 1] for a VAE) is
    the extractor's business: it knows what its backbone expects."""

    def forward(self, data, training=False):
        data = self.cast_data(data)
        inputs = dict(data['inputs'])
        for side in SIDES:
            images = inputs[side]
            if isinstance(images, (list, tuple)):
                inputs[side] = [self._to_unit(img) for img in images]
            else:
                inputs[side] = self._to_unit(images)
        return dict(inputs=inputs, data_samples=data.get('data_samples'))

    @staticmethod
    def _to_unit(image):
        if image.dtype == torch.uint8:
            return image.float().div_(255)
        return image.float()


def _frame(sample, side, image):
    """The sample's ``FrameTransform`` of one side; the identity (image size) when the pipeline
    recorded none."""
    frame = sample.get(f'{side}_frame')
    h, w = image.shape[-2:]
    if frame is None:
        return FrameTransform((1.0, 1.0), (0.0, 0.0), (w, h))
    transform = FrameTransform(tuple(frame['scale']), tuple(frame['offset']),
                               tuple(int(v) for v in frame['size']))
    if tuple(transform.size) != (w, h):
        raise ValueError(f'pair {sample.get("pair_id")!r}: {side}_frame says the frame is '
                         f'{tuple(transform.size)} (W, H) but the {side} image is {(w, h)}; a '
                         'transform after ResizePair changed the image size. Resize with '
                         'ResizePair last, just before PackPair.')
    return transform


def _kps(sample, key):
    value = sample[key]
    if torch.is_tensor(value):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64).reshape(-1, 2)


@MODELS.register_module()
class CorrespondenceModel(BaseModel):
    """Predict the target keypoints of each pair's source keypoints (zero-shot evaluation).

    Args:
        extractor (dict | nn.Module): a registered feature extractor,
            ``forward(images [B, 3, H, W] float in [0, 1], categories=None) -> [B, C, h, w]``
            (``categories``: the pairs' category names, one per image, for prompt-based
            extractors).
        matcher (dict | callable): a registered matcher of :mod:`correspondence.matching`
            (``ArgmaxMatcher``, ``SoftArgmaxMatcher``, ``KernelSoftArgmaxMatcher``).
        data_preprocessor (dict): defaults to ``PairDataPreprocessor`` (uint8 -> [0, 1]).

    ``forward(inputs, data_samples, mode='predict')`` returns the data samples (dicts) with
    ``pred_kps`` (``float32 [K, 2]``, original target pixels), what ``PCKMetric`` reads.
    ``mode='tensor'`` returns the lists of source and target feature maps.

    Source and target images go through the extractor in one call when all images of the batch
    have one size (the usual case after ``ResizePair``), otherwise pair by pair (one call per
    pair when its two images share a size). Pairs with different numbers of keypoints are
    padded to the batch's largest ``K`` and masked in the matcher.
    """

    def __init__(self, extractor, matcher=dict(type='SoftArgmaxMatcher'),
                 data_preprocessor=None, init_cfg=None):
        if data_preprocessor is None:
            data_preprocessor = dict(type='PairDataPreprocessor')
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.extractor = MODELS.build(extractor) if isinstance(extractor, dict) else extractor
        self.matcher = MODELS.build(matcher) if isinstance(matcher, dict) else matcher

    # ------------------------------------------------------------------ features
    def extract(self, images, categories):
        """``extractor(images, categories=...)``, checked to be ``[B, C, h, w]``."""
        feats = self.extractor(images, categories=list(categories))
        if not torch.is_tensor(feats) or feats.dim() != 4 or feats.shape[0] != images.shape[0]:
            shape = tuple(feats.shape) if torch.is_tensor(feats) else type(feats).__name__
            raise ValueError(f'{type(self.extractor).__name__} returned {shape} for '
                             f'{tuple(images.shape)} images; a correspondence extractor must '
                             'return one [C, h, w] feature map per image ([B, C, h, w]).')
        return feats

    def extract_pairs(self, src, trg, categories):
        """Features of both sides: two lists of ``[1, C, h, w]`` maps, or two ``[B, C, h, w]``
        tensors when each side is one stacked batch."""
        if torch.is_tensor(src) and torch.is_tensor(trg):
            if src.shape[1:] == trg.shape[1:]:
                feats = self.extract(torch.cat([src, trg]), list(categories) * 2)
                return feats[:len(src)], feats[len(src):]
            return self.extract(src, categories), self.extract(trg, categories)
        src_feats, trg_feats = [], []
        for s, t, cat in zip(src, trg, categories):
            s, t = s[None], t[None]
            if s.shape == t.shape:
                feats = self.extract(torch.cat([s, t]), [cat, cat])
                src_feats.append(feats[:1])
                trg_feats.append(feats[1:])
            else:
                src_feats.append(self.extract(s, [cat]))
                trg_feats.append(self.extract(t, [cat]))
        return src_feats, trg_feats

    # ------------------------------------------------------------------ matching
    def match(self, src_feat, trg_feat, samples, src_wh, trg_wh, src_frames, trg_frames):
        """Match one group of pairs sharing feature and frame sizes → ``pred_kps`` per pair."""
        kps = [fr.to_frame(_kps(s, 'src_kps')) for fr, s in zip(src_frames, samples)]
        counts = [len(k) for k in kps]
        k_max = max(counts, default=0)
        if k_max == 0:
            return [np.zeros((0, 2), dtype=np.float32) for _ in samples]
        padded = torch.zeros(len(samples), k_max, 2, dtype=torch.float64,
                             device=src_feat.device)
        mask = torch.zeros(len(samples), k_max, dtype=torch.bool, device=src_feat.device)
        for i, k in enumerate(kps):
            padded[i, :len(k)] = k.to(padded.device)
            mask[i, :len(k)] = True
        pred = self.matcher(src_feat, trg_feat, padded, src_wh, trg_wh,
                            kps_mask=None if min(counts) == k_max else mask)
        out = []
        for i, (count, frame) in enumerate(zip(counts, trg_frames)):
            back = frame.from_frame(pred[i, :count].detach().double().cpu())
            out.append(back.numpy().astype(np.float32))
        return out

    def predict(self, inputs, data_samples):
        samples = [s if isinstance(s, dict) else s.to_dict() for s in data_samples]
        src, trg = inputs['src'], inputs['trg']
        categories = [str(s.get('category')) for s in samples]
        src_feats, trg_feats = self.extract_pairs(src, trg, categories)
        src_frames = [_frame(s, 'src', img) for s, img in zip(samples, src)]
        trg_frames = [_frame(s, 'trg', img) for s, img in zip(samples, trg)]
        if torch.is_tensor(src_feats) and torch.is_tensor(src) and torch.is_tensor(trg):
            src_wh, trg_wh = (src.shape[-1], src.shape[-2]), (trg.shape[-1], trg.shape[-2])
            preds = self.match(src_feats, trg_feats, samples, src_wh, trg_wh, src_frames,
                               trg_frames)
        else:
            preds = []
            for i, sample in enumerate(samples):
                s_img, t_img = src[i], trg[i]
                s_feat, t_feat = src_feats[i], trg_feats[i]
                if s_feat.dim() == 3:
                    s_feat, t_feat = s_feat[None], t_feat[None]
                preds += self.match(s_feat, t_feat, [sample],
                                    (s_img.shape[-1], s_img.shape[-2]),
                                    (t_img.shape[-1], t_img.shape[-2]),
                                    [src_frames[i]], [trg_frames[i]])
        return [dict(sample, pred_kps=pred) for sample, pred in zip(samples, preds)]

    # ------------------------------------------------------------------ mmengine
    def forward(self, inputs, data_samples=None, mode='predict'):
        if mode == 'loss':
            raise NotImplementedError(
                'CorrespondenceModel evaluates zero-shot only: mode="loss" (training) is not '
                'implemented. Training comes with the DistillDIFT work (issue #8); until then use '
                'tools/test.py with this model, not tools/train.py.')
        if mode == 'tensor':
            categories = [str(s.get('category')) for s in (data_samples or [])] or \
                [None] * len(inputs['src'])
            return self.extract_pairs(inputs['src'], inputs['trg'], categories)
        if mode != 'predict':
            raise ValueError(f'mode={mode!r}: CorrespondenceModel supports "predict", "tensor" '
                             '(and "loss" with the DistillDIFT work, issue #8).')
        if data_samples is None:
            raise ValueError('mode="predict" needs the data_samples (the pair dicts with '
                             'src_kps); PackPair puts them in every batch.')
        return self.predict(inputs, data_samples)
