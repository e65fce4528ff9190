"""``FeatureDistiller``: distil a frozen teacher's features into an mmpretrain student.

Built declaratively, in the spirit of mmrazor's ConfigurableDistiller: each entry of
``distill_pairs`` says which student module's output meets which teacher feature, through which
connector and which loss. The teacher is a ``DiffusionTeacher`` (features at timesteps chosen by
``timestep_sampler``: fixed, uniform or RepFusion's REINFORCE policy) or a ``ClassifierTeacher``
(classic KD baselines).

Checkpoints hold the student under ``student.`` (``student.backbone.*`` is what downstream
configs load with ``init_cfg=dict(type='Pretrained', prefix='student.backbone.')``) and the
connectors; never the teacher, and the policy only with ``save_policy=True``.
"""
import copy

import torch
from mmengine.model import BaseModel
from mmengine.registry import MODELS as ROOT_MODELS
from mmpretrain.registry import MODELS
from torch import nn

from common.feature_hooks import FeatureRecorder, resolve_modules
from common.distill.connectors import align_spatial


def _global_pool(x):
    return x.mean(dim=(2, 3)) if x.dim() == 4 else x


@MODELS.register_module()
class FeatureDistiller(BaseModel):
    """Student + frozen teacher + connectors + losses (+ timestep sampler).

    Args:
        student (dict): an mmpretrain classifier config (``ImageClassifier``); its head may be
            None for pure representation distillation (RepFusion).
        teacher (dict): ``DiffusionTeacher`` or ``ClassifierTeacher`` config. For a diffusion
            teacher without ``input_norm``, the data preprocessor's mean/std are used to undo
            the normalisation (the teacher sees [-1, 1] images).
        distill_pairs (dict): ``name -> dict(student=module path, teacher=layer,
            connector=cfg | None, loss=cfg, align='bilinear' | None)``; the loss is logged as
            ``loss_<name>``.
        timestep_sampler (dict | None): ``FixedTimestep``, ``UniformTimestep`` or
            ``ReinforceTimestepPolicy``; required for diffusion teachers.
        reward_layer (str | None): teacher layer whose pooled feature feeds the policy's task
            head (default: the first pair's teacher layer).
        teacher_class_labels (bool): pass ground-truth labels to a class-conditional teacher.
        teacher_label_map (str | None): text file, one integer per line: the teacher's class id
            for dataset class i (e.g. Tiny-ImageNet index -> ImageNet-1k index). None feeds the
            dataset's indices unchanged (what the RepFusion code did, a mismatch for
            Tiny-ImageNet).
        student_loss (bool): also train the student's head with its own loss (KD baselines).
        save_policy (bool): keep the timestep policy's weights in checkpoints.
    """

    def __init__(self,
                 student,
                 teacher,
                 distill_pairs,
                 timestep_sampler=None,
                 reward_layer=None,
                 teacher_class_labels=False,
                 teacher_label_map=None,
                 student_loss=False,
                 save_policy=False,
                 data_preprocessor=None,
                 init_cfg=None):
        teacher = self._teacher_cfg(teacher, data_preprocessor)
        if isinstance(data_preprocessor, dict):  # built in mmpretrain's scope, whatever the caller's
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.student = MODELS.build(student)
        self.teacher = ROOT_MODELS.build(teacher)
        is_diffusion = hasattr(self.teacher, 'noise_scheduler')
        if is_diffusion and timestep_sampler is None:
            raise ValueError('A diffusion teacher needs a timestep_sampler (FixedTimestep, '
                             'UniformTimestep or ReinforceTimestepPolicy).')
        if timestep_sampler is not None:
            sampler_cfg = dict(timestep_sampler)
            if is_diffusion:
                sampler_cfg.setdefault('num_timesteps', self.teacher.num_train_timesteps)
            self.timestep_sampler = ROOT_MODELS.build(sampler_cfg)
        else:
            self.timestep_sampler = None
        self.pairs = {name: dict(pair) for name, pair in distill_pairs.items()}
        if not self.pairs:
            raise ValueError('distill_pairs is empty: name at least one student/teacher pair.')
        self.connectors = nn.ModuleDict({
            name: ROOT_MODELS.build(pair['connector']) if pair.get('connector') else nn.Identity()
            for name, pair in self.pairs.items()})
        self.losses = nn.ModuleDict(
            {name: ROOT_MODELS.build(pair['loss']) for name, pair in self.pairs.items()})
        teacher_layers = getattr(self.teacher, 'layers', [])
        unknown = [p['teacher'] for p in self.pairs.values() if p['teacher'] not in teacher_layers]
        if unknown:
            raise ValueError(f'distill_pairs use teacher layers {unknown} that the teacher does '
                             f'not record; its layers are {teacher_layers}. Add them to '
                             f'teacher.layers.')
        self._student_modules = resolve_modules(
            self.student, sorted({p['student'] for p in self.pairs.values()}),
            what='student', how_to_list='`print(model.student)`')
        self.reward_layer = reward_layer or next(iter(self.pairs.values()))['teacher']
        self.teacher_class_labels = teacher_class_labels
        self.register_buffer('teacher_label_map', _read_label_map(teacher_label_map),
                             persistent=False)
        self.student_loss = student_loss
        if student_loss and getattr(self.student, 'head', None) is None:
            raise ValueError('student_loss=True needs a student with a head.')
        self.save_policy = save_policy
        self._register_state_dict_hook(FeatureDistiller._drop_policy)

    @staticmethod
    def _teacher_cfg(teacher, data_preprocessor):
        cfg = copy.deepcopy(dict(teacher))
        pre = dict(data_preprocessor or {})
        if (cfg.get('type') == 'DiffusionTeacher' and cfg.get('input_norm') is None
                and 'mean' in pre and 'std' in pre):
            cfg['input_norm'] = dict(mean=list(pre['mean']), std=list(pre['std']))
        return cfg

    @staticmethod
    def _drop_policy(module, state_dict, prefix, local_metadata):
        if not module.save_policy:
            for key in [k for k in state_dict if k.startswith(prefix + 'timestep_sampler.')]:
                del state_dict[key]
        return state_dict

    # ------------------------------------------------------------------ forward
    def forward(self, inputs, data_samples=None, mode='tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.student(inputs, data_samples, mode='predict')
        return self.student(inputs, data_samples, mode='tensor')

    def _labels(self, data_samples, device):
        if not data_samples or 'gt_label' not in data_samples[0]:
            return None
        return torch.cat([ds.gt_label for ds in data_samples]).to(device)

    def _teacher_labels(self, labels):
        if not self.teacher_class_labels:
            return None
        if labels is None:
            raise ValueError('teacher_class_labels=True needs gt_label in the training data.')
        if self.teacher_label_map is None:
            return labels
        if int(labels.max()) >= len(self.teacher_label_map):
            raise ValueError(f'Label {int(labels.max())} has no entry in teacher_label_map '
                             f'({len(self.teacher_label_map)} lines).')
        return self.teacher_label_map.to(labels.device)[labels]

    def loss(self, inputs, data_samples=None):
        labels = self._labels(data_samples, inputs.device)
        losses = {}
        timesteps = None
        if self.timestep_sampler is not None:
            timesteps = self.timestep_sampler.sample(inputs)
        teacher_feats = self.teacher.features_at(
            inputs, timesteps, class_labels=self._teacher_labels(labels))

        with FeatureRecorder(self._student_modules, early_exit=False, keep='last') as rec:
            student_out = {}

            def run_student():
                feats = self.student.extract_feat(inputs)
                if self.student_loss:
                    head_losses = self.student.head.loss(feats, data_samples)
                    student_out.update({f'student_{k}': v for k, v in head_losses.items()})

            student_feats = rec.run(run_student)
        losses.update(student_out)

        for name, pair in self.pairs.items():
            s = self.connectors[name](student_feats[pair['student']])
            t = teacher_feats[pair['teacher']]
            if pair.get('align', 'bilinear') and s.dim() == 4 and s.shape[-2:] != t.shape[-2:]:
                s = align_spatial(s, t, mode=pair.get('align', 'bilinear'))
            losses[f'loss_{name}'] = self.losses[name](s, t)

        if self.timestep_sampler is not None and self.timestep_sampler.learns:
            if labels is None:
                raise ValueError('A learned timestep policy needs labels (gt_label) for its '
                                 'reward; the training data has none.')
            pooled = _global_pool(teacher_feats[self.reward_layer])
            losses.update(self.timestep_sampler.losses(pooled, labels))
        if timesteps is not None:
            losses['timestep_mean'] = timesteps.float().mean().detach()
        return losses


def _read_label_map(path):
    """One integer per line → LongTensor, or None when no map is given."""
    if path is None:
        return None
    try:
        with open(path, encoding='utf-8') as f:
            ids = [int(line.split()[0]) for line in f if line.strip()]
    except (OSError, ValueError, IndexError) as err:
        raise ValueError(f'teacher_label_map {path!r} could not be read as one integer class id '
                         f'per line ({err}); write it with '
                         f'tools/dataset_converters/tinyimagenet.py --imagenet-synsets.') from None
    return torch.tensor(ids, dtype=torch.long)
