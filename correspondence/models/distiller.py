"""Training a correspondence student: similarity-map distillation from teachers (DistillDIFT) or
supervision by ground-truth keypoints, in one mmengine model that also evaluates.

The one rule: the student is the model's ``extractor`` and it is the only thing in the module
tree. Teachers are held outside it (never in ``state_dict()``, never given to the optimizer), so
a checkpoint of this model is exactly a checkpoint of a :class:`CorrespondenceModel` with the
same extractor: ``tools/test.py`` evaluates it with a plain zero-shot-style config, and other
configs load the student with ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='extractor.')``.

    model = dict(
        type='CorrespondenceDistiller',
        extractor=dict(type='DINOv2Student', pretrained=..., mode='lora'),          # the student
        teacher=dict(type='FusedExtractor', extractors=[sdxl_turbo, dinov2_reg]),  # or None
        supervision='teacher',                      # or 'keypoints' (SPair-71k trn keypoints)
        sampler=dict(type='PointSampler', method='full'),
        loss=dict(type='SimilarityDistillLoss', kind='ce', temperature=0.01),
        matcher=dict(type='SoftArgmaxMatcher'))     # evaluation, as CorrespondenceModel

Per training batch (pairs resized to one frame, so they stack):

* ``supervision='teacher'``: the student's features of source and target; the teacher's, read
  from the data samples (``src_teacher`` / ``trg_teacher``, written by the precompute tool and
  loaded by ``LoadTeacherFeatures``) or computed online (built lazily at the first batch that
  needs it), resized bilinearly to the student's grid. The sampler picks source cells; the loss
  compares the student's and the teacher's cosine-similarity maps of those cells against every
  target cell (``[B, N, h * w]``).
* ``supervision='keypoints'``: the student's descriptors at the source keypoints (bilinear)
  against every target cell; ``KeypointCELoss`` takes the target keypoints' cells as labels
  (and, symmetric, the reverse direction), ``SoftArgmaxMSELoss`` their sub-cell positions.
"""
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

from ..geometry import pixels_to_grid
from ..matching import sample_descriptors
from .correspondence_model import CorrespondenceModel, _frame, _kps
from .losses import KeypointCELoss, SimilarityDistillLoss, SoftArgmaxMSELoss, cosine_similarity

SUPERVISIONS = ('teacher', 'keypoints')


def _build(cfg):
    return MODELS.build(cfg) if isinstance(cfg, dict) else cfg


def _flat(feat):
    """``[B, C, h, w]`` → ``[B, h * w, C]``."""
    return feat.flatten(2).transpose(1, 2)


@MODELS.register_module()
class CorrespondenceDistiller(CorrespondenceModel):
    """A trainable student extractor, trained by a teacher's similarity maps or by keypoints.

    Args:
        extractor (dict | nn.Module): the student (``DINOv2Student``, ``DiffusionStudent``,
            ``BackboneStudent``, ...; any extractor whose parameters require grad).
        teacher (dict | nn.Module | None): a frozen extractor (``DiffusionExtractor``,
            ``DINOv2Extractor``, ``FusedExtractor`` of several). Needed for
            ``supervision='teacher'`` unless every batch carries precomputed features.
        supervision (str): ``'teacher'`` or ``'keypoints'``.
        sampler (dict): a ``PointSampler`` (source cells for ``'teacher'``; ``'foreground'``
            methods fit their co-PCA on the teacher's features).
        loss (dict): ``SimilarityDistillLoss`` for ``'teacher'``; ``KeypointCELoss`` or
            ``SoftArgmaxMSELoss`` for ``'keypoints'``.
        teacher_grid (str): ``'student'`` (default, as DistillDIFT: the teacher's maps are
            resized to the student's grid) or ``'teacher'`` (the student's to the teacher's).
        seed (int | None): seeds the generator of the point sampler and the soft-argmax target
            jitter (None: torch's global RNG, which mmengine seeds from ``randomness``).
        matcher, data_preprocessor: as :class:`CorrespondenceModel` (evaluation).
    """

    def __init__(self, extractor, teacher=None, supervision='teacher',
                 sampler=dict(type='PointSampler', method='full'),
                 loss=dict(type='SimilarityDistillLoss', kind='ce', temperature=0.01),
                 teacher_grid='student', seed=None, matcher=dict(type='SoftArgmaxMatcher'),
                 data_preprocessor=None, init_cfg=None):
        super().__init__(extractor, matcher=matcher, data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
        if supervision not in SUPERVISIONS:
            raise ValueError(f'CorrespondenceDistiller supervision={supervision!r}: use one of '
                             f'{SUPERVISIONS}.')
        if teacher_grid not in ('student', 'teacher'):
            raise ValueError(f"CorrespondenceDistiller teacher_grid={teacher_grid!r}: use "
                             "'student' or 'teacher'.")
        self.supervision = supervision
        self.teacher_grid = teacher_grid
        self.loss_module = _build(loss)
        wanted = (SimilarityDistillLoss, ) if supervision == 'teacher' else \
            (KeypointCELoss, SoftArgmaxMSELoss)
        if not isinstance(self.loss_module, wanted):
            raise ValueError(
                f'CorrespondenceDistiller supervision={supervision!r} takes a loss of type '
                f'{" or ".join(w.__name__ for w in wanted)}, got '
                f'{type(self.loss_module).__name__}. Similarity-map distillation compares a '
                "teacher's maps (SimilarityDistillLoss); keypoint supervision needs a keypoint "
                'loss (KeypointCELoss, SoftArgmaxMSELoss).')
        self.sampler = _build(sampler) if supervision == 'teacher' else None
        # Held outside the module tree: not in state_dict(), not in parameters().
        self.__dict__['_teacher_cfg'] = teacher
        self.__dict__['_teacher'] = None if isinstance(teacher, dict) or teacher is None \
            else self._freeze_teacher(teacher)
        self.seed = seed
        self.__dict__['_generator'] = None
        if not any(p.requires_grad for p in self.extractor.parameters()):
            raise ValueError(
                f'CorrespondenceDistiller: no parameter of the student '
                f'{type(self.extractor).__name__} requires grad, so training would change '
                'nothing. Use a trainable student (DINOv2Student mode="lora"/"full"/"upscaler", '
                'DiffusionStudent, BackboneStudent) or evaluate with CorrespondenceModel.')

    # ------------------------------------------------------------------ teacher (held outside)
    @staticmethod
    def _freeze_teacher(teacher):
        teacher.eval()
        teacher.requires_grad_(False)
        return teacher

    @property
    def teacher(self):
        """The frozen teacher, built (and moved to the student's device) at first use."""
        if self._teacher is None:
            if self._teacher_cfg is None:
                raise ValueError(
                    'CorrespondenceDistiller: this batch has no precomputed teacher features '
                    '(src_teacher / trg_teacher in the data samples) and the model has no '
                    'teacher. Set model.teacher to an extractor config, or add '
                    'LoadTeacherFeatures to the training pipeline with shards written by '
                    'tools/precompute_teacher_features.py.')
            device = next(self.extractor.parameters()).device
            self.__dict__['_teacher'] = self._freeze_teacher(
                MODELS.build(self._teacher_cfg).to(device))
        return self._teacher

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if self._teacher is not None:
            self._teacher._apply(fn, *args, **kwargs)
        return self

    def train(self, mode=True):
        super().train(mode)
        if self._teacher is not None:
            self._teacher.eval()
        return self

    @property
    def generator(self):
        if self.seed is None:
            return None
        device = next(self.extractor.parameters()).device
        if self._generator is None or self._generator.device != device:
            self.__dict__['_generator'] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    # ------------------------------------------------------------------ training
    @staticmethod
    def _stacked(inputs):
        src, trg = inputs['src'], inputs['trg']
        if not (torch.is_tensor(src) and torch.is_tensor(trg)) or src.shape != trg.shape:
            raise ValueError(
                'CorrespondenceDistiller trains on batches whose source and target images all '
                'have one size; this batch has images of several sizes. Put '
                "ResizePair(frame='stretched', size=(W, H)) (or 'padded') in the training "
                'pipeline.')
        return src, trg

    def teacher_features(self, samples, src, trg, categories):
        """The teacher's source and target maps ``[B, C, h, w]``: precomputed ones from the
        samples when all of them carry them, else computed online."""
        have = [('src_teacher' in s and 'trg_teacher' in s) for s in samples]
        if all(have):
            maps = []
            for side in ('src', 'trg'):
                feats = [torch.as_tensor(s[f'{side}_teacher']) for s in samples]
                if any(f.shape != feats[0].shape for f in feats):
                    raise ValueError(
                        f'precomputed {side}_teacher features have several shapes '
                        f'{sorted({tuple(f.shape) for f in feats})} in one batch; write the '
                        'shards with one frame size (tools/precompute_teacher_features.py).')
                maps.append(torch.stack(feats).to(src.device, torch.float32))
            return maps[0], maps[1]
        if any(have):
            raise ValueError('some samples of this batch carry precomputed teacher features and '
                             'some do not; a shard folder is missing images. Re-run '
                             'tools/precompute_teacher_features.py on the whole image set.')
        with torch.no_grad():
            feats = self.teacher(torch.cat([src, trg]), categories=list(categories) * 2)
        return feats[:len(src)].float(), feats[len(src):].float()

    def loss(self, inputs, data_samples):
        samples = [s if isinstance(s, dict) else s.to_dict() for s in data_samples]
        src, trg = self._stacked(inputs)
        categories = [str(s.get('category')) for s in samples]
        feats = self.extract(torch.cat([src, trg]), categories * 2)
        s_src, s_trg = feats[:len(src)], feats[len(src):]
        if self.supervision == 'teacher':
            value = self._teacher_loss(samples, src, trg, categories, s_src, s_trg)
        else:
            value = self._keypoint_loss(samples, src, trg, s_src, s_trg)
        return dict(loss=value)

    def _teacher_loss(self, samples, src, trg, categories, s_src, s_trg):
        t_src, t_trg = self.teacher_features(samples, src, trg, categories)
        if self.teacher_grid == 'student':
            grid = tuple(s_src.shape[-2:])
            t_src, t_trg = (self._resize(t, grid) for t in (t_src, t_trg))
        else:
            grid = tuple(t_src.shape[-2:])
            s_src, s_trg = (self._resize(s, grid) for s in (s_src, s_trg))
        idx, valid = self.sampler(grid, len(src), teacher_feats=(t_src, t_trg),
                                  generator=self.generator)
        idx = idx.to(s_src.device)
        valid = valid.to(s_src.device)

        def pick(flat):  # [B, h*w, C] at the sampled source cells -> [B, N, C]
            return flat.gather(1, idx[..., None].expand(-1, -1, flat.shape[-1]))

        student_sim = cosine_similarity(pick(_flat(s_src)), _flat(s_trg))
        with torch.no_grad():
            teacher_sim = cosine_similarity(pick(_flat(t_src)), _flat(t_trg))
        return self.loss_module(student_sim, teacher_sim, valid)

    @staticmethod
    def _resize(feat, grid):
        if tuple(feat.shape[-2:]) == tuple(grid):
            return feat
        return F.interpolate(feat, size=grid, mode='bilinear', align_corners=False)

    def _padded_kps(self, samples, images, key, side):
        """Keypoints in the frame of each image, padded to ``[B, K, 2]`` with a validity mask."""
        kps = [_frame(s, side, img).to_frame(_kps(s, key)).float()
               for s, img in zip(samples, images)]
        k_max = max((len(k) for k in kps), default=0)
        out = torch.zeros(len(kps), max(k_max, 1), 2, device=images.device)
        valid = torch.zeros(len(kps), max(k_max, 1), dtype=torch.bool, device=images.device)
        for i, k in enumerate(kps):
            out[i, :len(k)] = k.to(images.device)
            valid[i, :len(k)] = True
        return out, valid

    def _keypoint_loss(self, samples, src, trg, s_src, s_trg):
        src_kps, valid = self._padded_kps(samples, src, 'src_kps', 'src')
        trg_kps, _ = self._padded_kps(samples, trg, 'trg_kps', 'trg')
        if not valid.any():
            raise ValueError(
                "CorrespondenceDistiller supervision='keypoints' got a batch without any "
                'keypoint; train on pairs with keypoints (SPair-71k trn) or use '
                "supervision='teacher'.")
        frame_wh = (src.shape[-1], src.shape[-2])
        grid = tuple(s_trg.shape[-2:])
        src_desc = sample_descriptors(s_src, src_kps, frame_wh)
        src_to_trg = cosine_similarity(src_desc, _flat(s_trg))
        trg_grid = pixels_to_grid(trg_kps, grid, frame_wh)
        if isinstance(self.loss_module, SoftArgmaxMSELoss):
            return self.loss_module(src_to_trg, grid, trg_grid, valid, generator=self.generator)
        bilinear = self.loss_module.label == 'bilinear'
        kwargs = dict(grid_hw=grid) if bilinear else {}
        if self.loss_module.symmetric:
            trg_desc = sample_descriptors(s_trg, trg_kps, frame_wh)
            kwargs.update(trg_to_src=cosine_similarity(trg_desc, _flat(s_src)),
                          src_cells=self._labels(pixels_to_grid(src_kps, grid, frame_wh), grid,
                                                 bilinear))
        return self.loss_module(src_to_trg, self._labels(trg_grid, grid, bilinear), valid,
                                **kwargs)

    @staticmethod
    def _labels(grid_xy, grid, bilinear):
        """Keypoints in grid units → the loss's labels: the nearest cell's flat index
        (``row * w + col``), or the fractional ``(col, row)`` for bilinear labels."""
        h, w = grid
        if bilinear:
            return grid_xy
        col = torch.floor(grid_xy[..., 0] + 0.5).long().clamp(0, w - 1)
        row = torch.floor(grid_xy[..., 1] + 0.5).long().clamp(0, h - 1)
        return row * w + col

    # ------------------------------------------------------------------ mmengine
    def forward(self, inputs, data_samples=None, mode='predict'):
        if mode == 'loss':
            if data_samples is None:
                raise ValueError('mode="loss" needs the data_samples (PackPair puts them in '
                                 'every batch).')
            return self.loss(inputs, data_samples)
        return super().forward(inputs, data_samples, mode)
