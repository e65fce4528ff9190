"""``DSDMatcher``: the mmengine model of image-text matching with Stable Diffusion: scores every
candidate of a question with a :class:`DSDScorer` (evaluation) and trains LoRA adapters on the
UNet's attention projections with a ranking loss (DSD's attention-based prompt learning) or
Diffusion-ITM's hard-negative loss.

The one rule: the diffusion model is held outside the module tree; only the LoRA weights are
registered (under ``unet_lora.<module path>.lora_A/lora_B...``, the same ``Parameter`` objects the
UNet's peft layers use). So ``state_dict()``, checkpoints, ``parameters()`` and the optimizer hold
the LoRA weights and nothing else: a checkpoint is a few MB, never a copy of Stable Diffusion,
and the frozen UNet, VAE and text encoder cannot change.

Questions (interface 2) come as a list of dicts (``question_id``, ``images`` (I, 3, H, W) in
[-1, 1], ``texts`` (T str), ``target``, ``retrieval`` ``'text'`` / ``'image'`` / ``'pairwise'``,
``subset``), or as mmengine's ``pseudo_collate`` of such dicts (a dict of lists; its ``texts``
transposed), which is taken apart again.

Training (``train_step``, batch 1 per question as the reference; several questions: their losses
are averaged): per question one random timestep ``t`` uniform in ``[0, num_train_timesteps)`` and
one noise seed, shared by all its candidates, drawn from a ``torch.Generator`` the model owns. That
generator is re-seeded at every step from torch's global generator, so the draws follow the run's
``randomness.seed`` and a resumed run repeats them exactly when ``RNGStateHook`` restores the
global state (``common.engine.rng_state_hook``). The candidates are scored with gradients
(``scorer.score(..., timesteps=[t], noise_seed=seed)``); a ``'scores'`` loss ranks the configured
``score`` kind, a ``'denoising'`` loss (``HardNegativeITMLoss``) gets each candidate's noise
prediction at that ``t`` and noise. Text retrieval ranks the texts of the image, image retrieval
the images of the text, a pairwise (Winoground) question both ways for both pairs.

Evaluation (``val_step`` / ``test_step``, under ``torch.no_grad()``) returns interface 3: one dict
per question with every score kind, in candidate order (a 2 x 2 nested list [image][text] for
pairwise questions).
"""
import re

import torch
from mmengine.model import BaseModel
from mmengine.registry import MODELS

from .lora import LoRAError, add_lora, load_lora, lora_layers

__all__ = ['DSDMatcher', 'LORA_PREFIX', 'SCORE_KINDS', 'lora_from_state_dict']

SCORE_KINDS = ('dsd', 'attention', 'itm')
QUESTION_KEYS = ('question_id', 'images', 'texts', 'target', 'retrieval', 'subset')
LORA_PREFIX = 'unet_lora'
LORA_KEYS = ('targets', 'rank', 'alpha', 'dropout')  # add_lora's settings
# the peft attributes of a LoRA layer that hold its adapter modules (weights and dropout)
LORA_ATTRIBUTES = ('lora_A', 'lora_B', 'lora_embedding_A', 'lora_embedding_B',
                   'lora_magnitude_vector', 'lora_dropout')


def _mirror_lora(unet):
    """A module tree ``<module path>.lora_A/...`` whose leaves are the UNet's own peft adapter
    containers (shared, not copied): registering it registers exactly the LoRA weights."""
    root = torch.nn.Module()
    for path, layer in lora_layers(unet).items():
        node = root
        for part in path.split('.'):
            child = node._modules.get(part)
            if child is None:
                child = torch.nn.Module()
                node.add_module(part, child)
            node = child
        for attribute in LORA_ATTRIBUTES:
            container = getattr(layer, attribute, None)
            if isinstance(container, torch.nn.Module) and len(container):
                node.add_module(attribute, container)
    return root


def lora_from_state_dict(state, lora=None):
    """``(peft_state, config)`` of a DSDMatcher state dict (a checkpoint's ``state_dict``): the
    LoRA weights as ``<module>.lora_A.weight`` / ``lora_B.weight`` and the ``LoraConfig`` fields
    (``r`` from the weights' shapes, which must be the configured ``lora['rank']`` when given;
    ``lora_alpha`` from ``lora['alpha']``, else the rank; ``target_modules`` from the keys), as
    ``lora.write_lora_file`` takes them. No UNet is needed. Raises :class:`LoRAError` for a state
    dict that holds anything but a complete set of LoRA weights."""
    pattern = re.compile(rf'^{LORA_PREFIX}\.(.+)\.(lora_A|lora_B)\.[^.]+\.weight$')
    peft_state, other = {}, []
    for key, value in state.items():
        match = pattern.match(key)
        if match is None:
            other.append(key)
        else:
            peft_state[f'{match.group(1)}.{match.group(2)}.weight'] = value
    if other or not peft_state:
        shown = ', '.join(other[:5]) + (f' (and {len(other) - 5} more)' if len(other) > 5 else '')
        raise LoRAError(
            f'The state dict is not a DSDMatcher LoRA checkpoint: '
            f'{"keys " + shown + " are not" if other else "it has no"} '
            f'{LORA_PREFIX}.<module>.lora_A/lora_B.<adapter>.weight entries. Pass a checkpoint '
            f'written by training a DSDMatcher with lora=dict(...) (work_dir/iter_N.pth).')
    modules = sorted({k.rsplit('.lora_', 1)[0] for k in peft_state})
    unpaired = [m for m in modules if f'{m}.lora_A.weight' not in peft_state
                or f'{m}.lora_B.weight' not in peft_state]
    if unpaired:
        raise LoRAError(f'The checkpoint lacks lora_A or lora_B of {unpaired[:5]}; it is '
                        f'incomplete. Export another checkpoint of the run.')
    ranks = sorted({int(peft_state[f'{m}.lora_A.weight'].shape[0]) for m in modules})
    lora = dict(lora or {})
    rank = lora.get('rank', ranks[0])
    if ranks != [rank]:
        raise LoRAError(f'The checkpoint\'s LoRA weights have rank {ranks}, the config says '
                        f'lora.rank={rank}; pass the config the checkpoint was trained with.')
    alpha = lora.get('alpha')
    config = dict(r=int(rank), lora_alpha=float(rank if alpha is None else alpha),
                  lora_dropout=float(lora.get('dropout', 0.0)), target_modules=modules)
    return peft_state, config


def _as_question_list(args, collated):
    """The questions of a call: positional question dicts, or mmengine's pseudo_collate output
    (a dict of lists) taken apart."""
    if collated:
        missing = [k for k in QUESTION_KEYS if k not in collated]
        if missing or args:
            raise TypeError(
                f'DSDMatcher got collated data with keys {sorted(collated)} '
                f'{"and positional arguments " if args else ""}missing {missing}; expected '
                f'questions {QUESTION_KEYS} (interface 2), as a list of dicts or mmengine\'s '
                f'pseudo_collate of them.')
        count = len(collated['question_id'])
        texts = collated['texts']
        questions = []
        for i in range(count):
            question = {k: collated[k][i] for k in collated if k != 'texts'}
            # pseudo_collate transposes the per-question text lists: texts[j][i] is question
            # i's text j (all questions of a batch have the same number of texts)
            question['texts'] = [str(column[i]) for column in texts]
            questions.append(question)
        return questions
    questions = list(args[0]) if len(args) == 1 and isinstance(args[0], (list, tuple)) \
        else list(args)
    for question in questions:
        if not isinstance(question, dict) or any(k not in question for k in QUESTION_KEYS):
            got = sorted(question) if isinstance(question, dict) else type(question).__name__
            raise TypeError(
                f'DSDMatcher expects questions: dicts with keys {QUESTION_KEYS} (interface 2: '
                f'images (I, 3, H, W) in [-1, 1], texts list[str], target int, retrieval '
                f"'text'/'image'/'pairwise'); got {got}. Feed it an image_text_matching dataset "
                f'collated with pseudo_collate.')
    return questions


def _check_question(question, scores_shape=None):
    images, texts = question['images'], list(question['texts'])
    retrieval, target = question['retrieval'], int(question['target'])
    if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"question {question['question_id']!r}: images must be a float "
                         f'(I, 3, H, W) tensor in [-1, 1]; got '
                         f'{tuple(images.shape) if torch.is_tensor(images) else type(images)}.')
    sizes = dict(text=(1, None), image=(None, 1), pairwise=(2, 2))
    if retrieval not in sizes:
        raise ValueError(f"question {question['question_id']!r}: retrieval={retrieval!r}; "
                         f"expected 'text', 'image' or 'pairwise'.")
    want_i, want_t = sizes[retrieval]
    n_images, n_texts = images.shape[0], len(texts)
    if (want_i and n_images != want_i) or (want_t and n_texts != want_t):
        raise ValueError(
            f"question {question['question_id']!r}: a {retrieval!r} question has "
            f'{want_i or "any number of"} image(s) and {want_t or "any number of"} text(s); '
            f'got {n_images} and {n_texts}.')
    candidates = dict(text=n_texts, image=n_images, pairwise=2)[retrieval]
    if not 0 <= target < candidates:
        raise ValueError(f"question {question['question_id']!r}: target={target} is not a "
                         f'candidate index in [0, {candidates}).')
    return images, texts, retrieval, target


def _ranking_problems(matrix, retrieval, target):
    """``(scores [B, n], targets [B])`` of a question's (I, T) matrix (see module docstring)."""
    if retrieval == 'text':
        return matrix[:1], [target]
    if retrieval == 'image':
        return matrix[:, 0][None], [target]
    # pairwise: image k matches text k; rank the texts of each image, the images of each text
    return torch.cat([matrix, matrix.t()]), [0, 1, 0, 1]


def _candidate_list(matrix, retrieval):
    if retrieval == 'text':
        values = matrix[0]
    elif retrieval == 'image':
        values = matrix[:, 0]
    else:
        return [[float(v) for v in row] for row in matrix.detach().cpu().double()]
    return [float(v) for v in values.detach().cpu().double()]


@MODELS.register_module()
class DSDMatcher(BaseModel):
    """Image-text matching with a Stable Diffusion scorer, and LoRA prompt learning.

    Args:
        scorer (dict | DSDScorer): the scorer config (``dict(type='DSDScorer', pretrained=...)``).
        lora (dict | None): LoRA to train: ``dict(targets='all_attention' | 'cross_kv' | [names],
            rank=4, alpha=None, dropout=0.0)`` (see ``image_text_matching.models.lora``). None: no
            new adapter (zero-shot evaluation, or the adapter of ``lora_weights``).
        loss (dict): training loss, ``MarginRankingLoss`` (DSD), ``CandidateCELoss`` or
            ``HardNegativeITMLoss`` (Diffusion-ITM).
        score (str): which score a ranking loss ranks: ``'dsd'`` (attention + ITM, DSD's
            training score), ``'attention'`` or ``'itm'``.
        lora_weights (str | None): a LoRA folder (``pytorch_lora_weights.safetensors``, from
            ``save_lora`` or ``tools/export_itm_lora.py``) loaded into the UNet; with ``lora``
            set it must have the same targets and rank.
        gradient_checkpointing (bool): recompute the UNet's activations in the backward pass
            (``unet.enable_gradient_checkpointing()``) when training LoRA.
        data_preprocessor (dict | None): mmengine's; the default moves tensors to the device.
    """

    def __init__(self,
                 scorer,
                 lora=None,
                 loss=dict(type='MarginRankingLoss', margin=0.1),
                 score='dsd',
                 lora_weights=None,
                 gradient_checkpointing=True,
                 data_preprocessor=None,
                 init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if score not in SCORE_KINDS:
            raise ValueError(f'DSDMatcher: score={score!r} is not a score kind; use one of '
                             f'{SCORE_KINDS} (dsd = attention + itm, what DSD trains).')
        if lora is not None and (not isinstance(lora, dict) or set(lora) - set(LORA_KEYS)):
            unknown = sorted(set(lora) - set(LORA_KEYS)) if isinstance(lora, dict) else None
            raise ValueError(
                f'DSDMatcher: lora={lora!r} must be None or a dict with keys from {LORA_KEYS}'
                f'{f" (unknown: {unknown})" if unknown else ""}, e.g. '
                f"dict(targets='all_attention', rank=4) or dict(targets='cross_kv', rank=4).")
        self._register_parts()
        if isinstance(scorer, dict):
            scorer = MODELS.build(scorer)
        self.__dict__['scorer'] = scorer  # held outside the module tree (see the module docstring)
        scorer.requires_grad_(False)
        scorer.eval()
        unet = scorer.unet
        if lora is not None:
            add_lora(unet, **lora)
        if lora_weights is not None:
            load_lora(unet, lora_weights)
        self.add_module(LORA_PREFIX, _mirror_lora(unet))
        self.lora_cfg = lora
        self.lora_weights = lora_weights
        self.score_kind = score
        self.loss = MODELS.build(loss) if isinstance(loss, dict) else loss
        self.loss_requires = getattr(self.loss, 'requires', 'scores')
        if self.loss_requires not in ('scores', 'denoising'):
            raise ValueError(f'DSDMatcher: loss {type(self.loss).__name__} requires '
                             f"{self.loss_requires!r}; a matcher loss requires 'scores' or "
                             f"'denoising' (see image_text_matching.models.losses).")
        self.gradient_checkpointing = bool(gradient_checkpointing)
        if self.gradient_checkpointing and self.trainable_parameters():
            unet.enable_gradient_checkpointing()
        self._generator = torch.Generator()

    @staticmethod
    def _register_parts():
        """Import the modules that register ``DSDScorer`` and the losses in MODELS."""
        import importlib
        for name in ('scorer', 'losses'):
            importlib.import_module(f'{__package__}.{name}')

    # ------------------------------------------------------------------ module plumbing
    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self.scorer._apply(fn, *args, **kwargs)  # the LoRA weights are shared: already moved
        return self

    @property
    def num_train_timesteps(self):
        scheduler = self._noise_scheduler(required=False)
        return int(scheduler.config.num_train_timesteps) if scheduler is not None else 1000

    def _noise_scheduler(self, required=True):
        scheduler = getattr(self.scorer, 'noise_scheduler', None)
        if scheduler is None:
            components = getattr(self.scorer, 'components', None)
            scheduler = getattr(components, 'noise_scheduler', None)
        if scheduler is None and required:
            raise AttributeError(
                f'{type(self.scorer).__name__} exposes no noise_scheduler (nor '
                f'components.noise_scheduler), which HardNegativeITMLoss needs to noise the '
                f'latents; use a DSDScorer.')
        return scheduler

    # ------------------------------------------------------------------ forward
    def forward(self, *questions, mode='tensor', **collated):
        """``mode='loss'``: the training losses of the questions (as ``train_step`` computes
        them: random timestep and noise); ``'predict'`` / ``'tensor'``: interface 3 outputs
        under ``torch.no_grad()``. Questions as in the module docstring."""
        if mode not in ('loss', 'predict', 'tensor'):
            raise ValueError(f"DSDMatcher.forward: mode={mode!r}; expected 'loss', 'predict' or "
                             f"'tensor'.")
        questions = _as_question_list(questions, collated)
        if mode == 'loss':
            return self.loss_of(questions)
        with torch.no_grad():
            return [self.predict_question(q) for q in questions]

    def val_step(self, data):
        with torch.no_grad():
            return super().val_step(data)

    def test_step(self, data):
        with torch.no_grad():
            return super().test_step(data)

    # ------------------------------------------------------------------ evaluation
    def predict_question(self, question):
        """Interface 3 for one question: every score kind of every candidate."""
        images, texts, retrieval, target = _check_question(question)
        scores = self.scorer.score(images, texts)
        return dict(question_id=question['question_id'], subset=question['subset'],
                    retrieval=retrieval, target=target,
                    scores={kind: _candidate_list(scores[kind], retrieval)
                            for kind in SCORE_KINDS})

    # ------------------------------------------------------------------ training
    def loss_of(self, questions):
        """``dict(loss=mean over questions, acc=...)``; one random timestep and noise seed per
        question from the model's generator (re-seeded from torch's global generator)."""
        if not self.trainable_parameters():
            raise RuntimeError(
                'DSDMatcher has no trainable weights: set lora=dict(targets=\'all_attention\', '
                'rank=4) (or \'cross_kv\') in the model config to train LoRA adapters, or '
                'evaluate with tools/test.py.')
        if not questions:
            raise ValueError('DSDMatcher: a training batch needs at least one question.')
        device = next(iter(self.trainable_parameters())).device
        self._generator.manual_seed(int(torch.randint(0, 2 ** 62, ())))
        losses, correct = [], []
        for question in questions:
            images, texts, retrieval, target = _check_question(question)
            t = int(torch.randint(0, self.num_train_timesteps, (), generator=self._generator))
            seed = int(torch.randint(0, 2 ** 31 - 1, (), generator=self._generator))
            if self.loss_requires == 'denoising':
                loss, hit = self._denoising_loss(images, texts, retrieval, target, t, seed)
            else:
                matrix = self.scorer.score(images, texts, timesteps=[t], noise_seed=seed)
                scores, targets = _ranking_problems(matrix[self.score_kind], retrieval, target)
                loss = self.loss(scores, torch.tensor(targets, device=scores.device))
                hit = (scores.detach().argmax(1).cpu() == torch.tensor(targets)).float().mean()
            losses.append(loss)
            correct.append(hit)
        return dict(loss=torch.stack(losses).mean(),
                    acc=torch.stack(correct).mean().to(device))

    def denoising_predictions(self, images, texts, t, seed):
        """``(predictions (I, T, C, h, w), goals (I, 1, C, h, w))``, float32: the UNet's
        prediction for every (image, text) pair at timestep ``t`` with the noise of ``seed`` (the
        scorer's common random noise, ``timesteps.shared_noise``), and the regression target of
        each image (the noise for epsilon-prediction models, the velocity for v-prediction)."""
        from .timesteps import shared_noise
        scheduler = self._noise_scheduler()
        latents = self.scorer.encode_images(images, seed)
        embeddings, mask = self.scorer.encode_texts(list(texts))
        n_images, n_texts = latents.shape[0], embeddings.shape[0]
        eps = shared_noise(seed, t, latents.shape[1:]).to(latents.device, latents.dtype)
        eps = eps.expand_as(latents)
        acp = scheduler.alphas_cumprod.to(latents.device, torch.float32)[t]
        noisy = (acp.sqrt() * latents.float() + (1 - acp).sqrt() * eps.float()).to(latents.dtype)
        kind = scheduler.config.prediction_type
        if kind == 'epsilon':
            goals = eps
        elif kind == 'v_prediction':
            goals = (acp.sqrt() * eps.float() - (1 - acp).sqrt() * latents.float())
        else:
            raise ValueError(f'HardNegativeITMLoss needs an epsilon- or v-prediction model; '
                             f'this scheduler says prediction_type={kind!r}.')
        dtype = getattr(self.scorer, 'compute_dtype', latents.dtype)  # the UNet's dtype
        x = noisy.repeat_interleave(n_texts, dim=0).to(dtype)
        context = embeddings.repeat(n_images, 1, 1).to(dtype)
        timestep = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        capture = getattr(self.scorer, 'capture', None)  # the scorer's attention capture
        if capture is not None:  # reads the cross-attention of every UNet call: tell it the mask
            capture.set_token_mask(context, mask.repeat(n_images, 1))
        prediction = self.scorer.unet(x, timestep, context).sample.float()
        if capture is not None:
            capture.clear()
        shape = (n_images, n_texts) + tuple(prediction.shape[1:])
        return prediction.reshape(shape), goals.float()[:, None]

    def _denoising_loss(self, images, texts, retrieval, target, t, seed):
        predictions, goals = self.denoising_predictions(images, texts, t, seed)
        if retrieval == 'text':
            problems = [(predictions[0], goals[0].expand_as(predictions[0]), target)]
        elif retrieval == 'image':
            problems = [(predictions[:, 0], goals[:, 0], target)]
        else:
            problems = [(predictions[k], goals[k].expand_as(predictions[k]), k) for k in (0, 1)]
            problems += [(predictions[:, k], goals[:, 0], k) for k in (0, 1)]
        loss = torch.stack([self.loss(p, g, i) for p, g, i in problems]).mean()
        with torch.no_grad():  # accuracy: the candidate with the smallest denoising error
            hits = [float((p - g).float().square().flatten(1).mean(1).argmin()) == i
                    for p, g, i in problems]
        return loss, torch.tensor(hits, dtype=torch.float32).mean()

    # ------------------------------------------------------------------ LoRA out
    def save_lora(self, folder):
        """Write the UNet's LoRA as a diffusers-loadable folder (see ``lora.save_lora``)."""
        from .lora import save_lora
        if not lora_layers(self.scorer.unet):
            raise RuntimeError('DSDMatcher has no LoRA adapter to save (lora=None and no '
                               'lora_weights).')
        return save_lora(self.scorer.unet, folder)
