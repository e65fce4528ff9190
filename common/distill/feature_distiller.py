"""``FeatureDistiller``: distil a frozen teacher's features into any student network.

Built declaratively, in the spirit of mmrazor's ConfigurableDistiller: each entry of
``distill_pairs`` says which student module's output meets which teacher feature, through which
connector and which loss. The teacher is a ``DiffusionTeacher`` (features at timesteps chosen by
``timestep_sampler``: fixed, uniform or RepFusion's REINFORCE policy) or a ``ClassifierTeacher``
(classic KD baselines). The student is any model built from a config: an mmpretrain classifier,
an mmseg segmentor or backbone, an mmpose estimator or backbone, a bare backbone, or a
transformers model through :class:`~common.distill.students.HFStudent`. It is built in the
caller's default scope (the config's ``default_scope``) unless its dict names ``_scope_``.

The one rule: a checkpoint holds everything training needs to continue (student under
``student.``, connectors under ``connectors.``, the timestep sampler with its policy net, task
head and reward baseline under ``timestep_sampler.``) and never the teacher, which is held outside
the module tree. Downstream configs load the student with
``init_cfg=dict(type='Pretrained', prefix='student.backbone.')``.

Registered in mmengine's root ``MODELS``: every OpenMMLab scope finds it through its registry's
parent, so ``type='FeatureDistiller'`` works under ``default_scope='mmpretrain'``, ``'mmseg'``,
``'mmpose'`` or none.
"""
import copy
import inspect
import warnings

import torch
from mmengine.model import BaseModel
from mmengine.registry import MODELS, DefaultScope
from torch import nn

from .. import teachers  # noqa: F401  first: feature_hooks and teachers import each other
from ..feature_hooks import FeatureRecorder, resolve_modules
from .connectors import align_spatial

__all__ = ['FeatureDistiller', 'PolicyStateMissingWarning', 'build_in_caller_scope']


class PolicyStateMissingWarning(UserWarning):
    """A checkpoint loaded into a distiller has no state for its learned timestep sampler."""


def _global_pool(x):
    return x.mean(dim=(2, 3)) if x.dim() == 4 else x


def _all_registries(registry):
    for child in registry.children.values():
        yield child
        yield from _all_registries(child)


def _scopes_holding(type_name):
    """Scopes of the imported OpenMMLab registries that register ``type_name`` themselves."""
    scopes = []
    for registry in _all_registries(MODELS):
        try:
            registry.import_from_location()
        except Exception:  # noqa: BLE001 - a scope whose package fails to import cannot hold it
            continue
        if type_name in registry._module_dict:
            scopes.append(registry.scope)
    return scopes


def build_in_caller_scope(cfg, what):
    """Build ``cfg`` from mmengine's root ``MODELS`` in the caller's default scope.

    ``_scope_`` in the dict wins; else the current default scope (a config's ``default_scope``,
    set by the runner) is used. With no default scope at all (a script calling ``MODELS.build``
    directly), a type that the root registry does not hold is looked up in every imported
    OpenMMLab registry and must be registered in exactly one of them.
    """
    if isinstance(cfg, nn.Module):
        return cfg
    cfg = copy.deepcopy(dict(cfg))
    type_name = cfg.get('type')
    if (isinstance(type_name, str) and '.' not in type_name and cfg.get('_scope_') is None
            and DefaultScope.get_current_instance() is None
            and type_name not in MODELS._module_dict):
        scopes = _scopes_holding(type_name)
        if len(scopes) != 1:
            found = (f'it is registered in the scopes {scopes}' if scopes else
                     'no imported OpenMMLab registry holds it')
            raise KeyError(
                f'FeatureDistiller could not choose a registry for the {what} type '
                f'{type_name!r}: no default scope is set and {found}. Set default_scope in the '
                f"config (tools/train.py does), add _scope_='mmpretrain' (or 'mmseg', 'mmpose', "
                f"...) to the {what} dict, or import the package that registers it.")
        cfg['_scope_'] = scopes[0]
    return MODELS.build(cfg)


def _registered_class(cfg):
    """The class a teacher config would build (None when the registry does not know it)."""
    type_name = cfg.get('type')
    if inspect.isclass(type_name):
        return type_name
    with MODELS.switch_scope_and_registry(cfg.get('_scope_')) as registry:
        return registry.get(type_name)


def _accepts(cls, name):
    """Whether ``cls(...)`` takes the keyword ``name`` (also through ``**kwargs`` to a base)."""
    for klass in inspect.getmro(cls):
        if klass is object or '__init__' not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        if name in params:
            return True
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return False
    return False


@MODELS.register_module()
class FeatureDistiller(BaseModel):
    """Student + frozen teacher + connectors + losses (+ timestep sampler).

    Args:
        student (dict): any model config, built in the caller's default scope (``_scope_`` in
            the dict overrides it). Features are recorded by module path (``backbone.layer4``
            of an mmpretrain classifier, ``layer4`` of a bare backbone, ``model.encoder.stages.1``
            of an ``HFStudent``). The distiller runs ``student.extract_feat(inputs)`` when the
            student has it, else ``student(inputs)``; with ``student_loss=True`` it runs
            ``student.loss(inputs, data_samples)`` instead (mmengine's ``BaseModel``
            convention), whose losses are logged with a ``student_`` prefix.
        teacher (dict): ``DiffusionTeacher`` or ``ClassifierTeacher`` config. When the teacher's
            registered class takes ``input_norm`` (``DiffusionTeacher`` and its subclasses) and
            the config leaves it unset, the data preprocessor's mean/std are used to undo the
            normalisation, so the teacher sees [-1, 1] images.
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
        student_loss (bool): also train the student with its own ``loss`` (KD baselines).
        save_policy (None): removed. The timestep sampler is always in the checkpoint (a resumed
            policy run needs it); ``True`` warns that it has no effect, ``False`` is refused.
        data_preprocessor (dict | nn.Module | None): built in the same scope as the student.
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
                 save_policy=None,
                 data_preprocessor=None,
                 init_cfg=None):
        _check_save_policy(save_policy)
        teacher = self._teacher_cfg(teacher, data_preprocessor)
        if isinstance(data_preprocessor, dict):
            data_preprocessor = build_in_caller_scope(data_preprocessor, 'data_preprocessor')
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.student = build_in_caller_scope(student, 'student')
        self.teacher = MODELS.build(teacher)
        is_diffusion = hasattr(self.teacher, 'noise_scheduler')
        if is_diffusion and timestep_sampler is None:
            raise ValueError('A diffusion teacher needs a timestep_sampler (FixedTimestep, '
                             'UniformTimestep or ReinforceTimestepPolicy).')
        if timestep_sampler is not None:
            sampler_cfg = dict(timestep_sampler)
            if is_diffusion:
                sampler_cfg.setdefault('num_timesteps', self.teacher.num_train_timesteps)
            self.timestep_sampler = MODELS.build(sampler_cfg)
        else:
            self.timestep_sampler = None
        self.pairs = {name: dict(pair) for name, pair in distill_pairs.items()}
        if not self.pairs:
            raise ValueError('distill_pairs is empty: name at least one student/teacher pair.')
        self.connectors = nn.ModuleDict({
            name: MODELS.build(pair['connector']) if pair.get('connector') else nn.Identity()
            for name, pair in self.pairs.items()})
        self.losses = nn.ModuleDict(
            {name: MODELS.build(pair['loss']) for name, pair in self.pairs.items()})
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
        if student_loss:
            self._check_student_loss()

    def _check_student_loss(self):
        name = type(self.student).__name__
        if not callable(getattr(self.student, 'loss', None)):
            raise ValueError(
                f'student_loss=True calls the student\'s own loss(inputs, data_samples), but the '
                f'student {name} has no loss method (a bare backbone or a transformers model). '
                f'Use a full model (e.g. ImageClassifier with a head) or set student_loss=False.')
        if hasattr(self.student, 'head') and self.student.head is None:
            raise ValueError(f'student_loss=True needs a student with a head; the student {name} '
                             f'was built with head=None. Give it a head or set '
                             f'student_loss=False.')

    @staticmethod
    def _teacher_cfg(teacher, data_preprocessor):
        cfg = copy.deepcopy(dict(teacher))
        pre = data_preprocessor if isinstance(data_preprocessor, dict) else {}
        if (cfg.get('input_norm') is None and 'mean' in pre and 'std' in pre
                and pre['mean'] is not None and pre['std'] is not None):
            cls = _registered_class(cfg)
            if cls is not None and _accepts(cls, 'input_norm'):
                cfg['input_norm'] = dict(mean=list(pre['mean']), std=list(pre['std']))
        return cfg

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        sampler = self.timestep_sampler
        if sampler is None or not sampler.state_dict():
            return
        key = prefix + 'timestep_sampler.'
        if not any(k.startswith(key) for k in state_dict):
            warnings.warn(
                f'The checkpoint loaded into FeatureDistiller has no {key}* entries, so the '
                f'{type(sampler).__name__} (policy net, task head, reward baseline) keeps its '
                f'fresh random state while the rest is restored. Checkpoints written before the '
                f'policy was always saved (save_policy=False) cannot resume a policy run '
                f'faithfully: restart the run, or accept a re-learned policy.',
                PolicyStateMissingWarning, stacklevel=2)

    # ------------------------------------------------------------------ forward
    def forward(self, inputs, data_samples=None, mode='tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        is_model = isinstance(self.student, BaseModel)
        if mode == 'predict':
            if not is_model:
                raise ValueError(
                    f"FeatureDistiller(mode='predict') delegates to the student, but the "
                    f'student {type(self.student).__name__} is not an mmengine BaseModel with a '
                    f'predict mode (a bare backbone or a transformers model). Evaluate the '
                    f'distilled student in a downstream config instead (load it with '
                    f"init_cfg=dict(type='Pretrained', prefix='student.')), or set val_cfg and "
                    f'test_cfg to None in the distillation config.')
            return self.student(inputs, data_samples, mode='predict')
        if mode != 'tensor':
            raise ValueError(f"FeatureDistiller mode must be 'loss', 'predict' or 'tensor', got "
                             f'{mode!r}.')
        if is_model:
            return self.student(inputs, data_samples, mode='tensor')
        return self.student(inputs)

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

    def _run_student(self, inputs, data_samples):
        """Run the student once; return its own losses (``student_loss=True``) prefixed."""
        if self.student_loss:
            own = self.student.loss(inputs, data_samples)
            return {f'student_{k}': v for k, v in own.items()}
        if callable(getattr(self.student, 'extract_feat', None)):
            self.student.extract_feat(inputs)
        else:
            self.student(inputs)
        return {}

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
            student_feats = rec.run(
                lambda: student_out.update(self._run_student(inputs, data_samples)))
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


def _check_save_policy(save_policy):
    if save_policy is None:
        return
    if save_policy is False:
        raise ValueError(
            'FeatureDistiller(save_policy=False) is no longer supported: checkpoints always hold '
            'the timestep sampler (policy net, task head, reward baseline), because a resumed '
            'policy run that restores the optimizer state but not these weights silently '
            'restarts the policy from random. Remove save_policy from the config; a student '
            'checkpoint for fine-tuning is unaffected (downstream configs load only '
            "prefix='student.backbone.').")
    warnings.warn('FeatureDistiller(save_policy=True) has no effect any more: the timestep '
                  'sampler is always saved. Remove save_policy from the config.',
                  FutureWarning, stacklevel=3)


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
