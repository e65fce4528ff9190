"""Dense feature extractors for semantic correspondence: images in, a feature grid out.

The one rule: ``extractor(images, categories=None)`` takes float RGB ``images`` in ``[0, 1]``,
``[B, 3, H, W]`` at the frame size the data pipeline produced, and returns ``[B, C, h, w]``
(float32). Each extractor does its own normalisation (ImageNet statistics for DINOv2, ``[-1, 1]``
for diffusion models), so a pipeline never normalises for a backbone. ``categories`` (one class
name per image) is used by extractors that condition on it (the diffusion prompt) and ignored by
the others. ``stride`` says how many input pixels one feature cell spans (informative; the
coordinate maps themselves live in :mod:`correspondence.geometry`).

Extractors, all registered in mmengine's root ``MODELS``:

* :class:`DINOv2Extractor`: DINOv2 (with or without registers) patch tokens of one layer.
* :class:`DiffusionExtractor`: one ``layer@t`` of a :class:`~common.teachers.DiffusionTeacher`,
  optionally with a per-category prompt (DIFT's ``'a photo of a {category}'``).
* :class:`FusedExtractor`: SD-DINO fusion of several extractors (optional per-source PCA, L2
  normalisation, resize to one grid, weighted concatenation).
* :class:`PixelExtractor` and :class:`RandomInitExtractor`: the baselines (raw pixels, a
  randomly initialised network); :class:`BackboneStudent`, the same network trainable.
"""
import logging
import os

import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.registry import MODELS

from common.feature_hooks import FeatureRecorder
from common.teachers.diffusion_teacher import DTYPES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINOV2_MODEL_TYPES = ('dinov2', 'dinov2_with_registers')


def check_images(images, who):
    """Raise a clear error unless ``images`` is a float ``[B, 3, H, W]`` tensor."""
    if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1] != 3 \
            or not torch.is_floating_point(images):
        what = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        dtype = f' {images.dtype}' if torch.is_tensor(images) else ''
        raise ValueError(
            f'{who} takes float RGB images in [0, 1] of shape [B, 3, H, W], got {what}{dtype}. '
            f'Convert uint8 images with `images.float() / 255` and stack them into a batch.')


def _build(cfg):
    return MODELS.build(cfg) if isinstance(cfg, dict) else cfg


class _FrozenMixin:
    """``frozen=True``: parameters never require grad, ``train()`` keeps the module in eval mode
    and the forward runs without autograd. The weights stay in the module tree (and so in
    ``state_dict()``): later training variants (LoRA) adapt the same module."""

    def _freeze(self, module):
        module.eval()  # some backbones' train() returns None: no chaining
        module.requires_grad_(False)

    def train(self, mode=True):
        super().train(mode)
        if self.frozen:
            for module in self.children():
                module.eval()
        return self


# ---------------------------------------------------------------------------------------- DINOv2
def _load_transformers_model(pretrained, config, dtype, who):
    """A transformers model from a local folder, a hub id or a config dict (random weights)."""
    from transformers import AutoConfig, AutoModel
    if (pretrained is None) == (config is None):
        raise ValueError(
            f'{who} needs exactly one of pretrained (a transformers model folder or hub id, e.g. '
            f"'facebook/dinov2-base') and config (a dict such as dict(model_type='dinov2', "
            f'hidden_size=768, ...) for random weights), got pretrained={pretrained!r}, '
            f'config={config!r}.')
    if config is not None:
        config = dict(config)
        model_type = config.pop('model_type', 'dinov2')
        return AutoModel.from_config(AutoConfig.for_model(model_type, **config)).to(dtype)
    folder = os.path.expanduser(str(pretrained))
    if os.path.isdir(folder):
        return AutoModel.from_pretrained(folder, dtype=dtype)
    if folder.startswith(('.', '/', '~')) or folder.count('/') != 1:
        raise FileNotFoundError(
            f'{who}: pretrained={pretrained!r} is no such folder (resolved from {os.getcwd()!r}). '
            f'Point it at a transformers model folder (config.json + model.safetensors) or use a '
            f"hub id such as 'facebook/dinov2-base' on a machine that is online.")
    try:
        return AutoModel.from_pretrained(pretrained, dtype=dtype)
    except (OSError, ValueError) as err:
        name = pretrained.split('/')[-1]
        raise OSError(
            f'{who}: pretrained={pretrained!r} is not a local folder and could not be loaded from '
            f'the Hugging Face hub ({type(err).__name__}: {str(err).splitlines()[0][:200]}). '
            f'Hubs may be unreachable from this machine (HF_HUB_OFFLINE='
            f'{os.environ.get("HF_HUB_OFFLINE", "unset")}). Download it on a machine that is '
            f'online (`huggingface-cli download {pretrained} --local-dir checkpoints/{name}`), '
            f"copy the folder here and set pretrained='checkpoints/{name}'.") from None


@MODELS.register_module()
class DINOv2Extractor(_FrozenMixin, BaseModule):
    """Patch tokens of one layer of a DINOv2 ViT (/14; S, B, L, G; with or without registers),
    through transformers, as a ``[B, C, H/14, W/14]`` grid.

    ImageNet normalisation is applied inside; ``H`` and ``W`` must be multiples of the patch
    size (the references resize to 434 = 31 x 14, 840 = 60 x 14). The CLS token and the register
    tokens are dropped.

    Layers: ``layer`` indexes transformers' ``hidden_states``: 0 is the patch embedding, ``i``
    the output of block ``i`` (1-based), ``-1`` the last block. ``final_norm`` applies the
    model's final layernorm to that output; its default (None) applies it to the last block only,
    so ``layer=-1`` is transformers' ``last_hidden_state`` (DINOv2's ``x_norm_patchtokens``, what
    DistillDIFT uses). SD-DINO/GeoAware's "token facet, layer 11" of ViT-B is the raw output of
    the 12th block: ``layer=12, final_norm=False``. The forward stops after the requested block
    (a hook, as the diffusion teacher), so an early layer costs only the blocks before it.

    Args:
        pretrained (str | None): a transformers model folder or hub id
            (``facebook/dinov2-base``, ``facebook/dinov2-with-registers-base``, ...).
        layer (int): see above.
        final_norm (bool | None): see above.
        config (dict | None): instead of ``pretrained``, build a randomly initialised model from
            this config (``model_type`` 'dinov2' (default) or 'dinov2_with_registers').
        frozen (bool): eval mode, no gradients (default). Training variants come later.
        dtype (str): compute dtype, ``'float32'``, ``'float16'`` or ``'bfloat16'``; features are
            returned as float32.
    """

    def __init__(self, pretrained=None, layer=-1, final_norm=None, config=None, frozen=True,
                 dtype='float32', init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if dtype not in DTYPES:
            raise ValueError(f'DINOv2Extractor dtype={dtype!r} is not one of {tuple(DTYPES)}.')
        self.compute_dtype = DTYPES[dtype]
        self.model = _load_transformers_model(pretrained, config, self.compute_dtype,
                                              'DINOv2Extractor')
        # mmengine's init_weights must never re-initialise loaded weights through transformers'
        # own init_weights.
        self.model.is_init = True
        cfg = self.model.config
        if cfg.model_type not in DINOV2_MODEL_TYPES:
            raise ValueError(
                f'DINOv2Extractor: {pretrained or config!r} is a {cfg.model_type!r} model, not one '
                f'of {DINOV2_MODEL_TYPES}.')
        self.patch_size = int(cfg.patch_size)
        self.stride = self.patch_size
        self.num_prefix_tokens = 1 + int(getattr(cfg, 'num_register_tokens', 0) or 0)
        n = int(cfg.num_hidden_layers)
        index = layer if layer >= 0 else n + 1 + layer
        if not 0 <= index <= n:
            raise ValueError(
                f'DINOv2Extractor layer={layer} is outside this model\'s {n} blocks: use 0 (patch '
                f'embedding), 1..{n} (output of that block) or -1..-{n + 1} from the end.')
        self.layer = layer
        self.layer_index = index
        self.final_norm = (index == n) if final_norm is None else bool(final_norm)
        self._module_name = 'embeddings' if index == 0 else f'encoder.layer.{index - 1}'
        self.frozen = frozen
        if frozen:
            self._freeze(self.model)
        self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer('std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images):
        """``[0, 1]`` RGB to the ImageNet-normalised input DINOv2 was trained on."""
        return (images.float() - self.mean) / self.std

    def forward(self, images, categories=None):
        check_images(images, 'DINOv2Extractor')
        h, w = images.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            p = self.patch_size
            raise ValueError(
                f'DINOv2Extractor: images of {h}x{w} pixels (HxW) are not multiples of the patch '
                f'size {p}: the last {h % p} rows / {w % p} columns would be silently dropped. '
                f'Resize the frame to a multiple of {p} (e.g. {max(p, round(h / p) * p)}x'
                f'{max(p, round(w / p) * p)}; the references use 434 = 31x{p} or 840 = 60x{p}).')
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            module = self.model.get_submodule(self._module_name)
            with FeatureRecorder({'out': module}, early_exit=True) as rec:
                tokens = rec.run(lambda: self.model(
                    pixel_values=self.normalize(images).to(self.compute_dtype)))['out']
            if self.final_norm:
                tokens = self.model.layernorm(tokens)
        patches = tokens[:, self.num_prefix_tokens:].float()
        return patches.transpose(1, 2).reshape(len(images), -1, h // self.patch_size,
                                               w // self.patch_size)


# ------------------------------------------------------------------------------------- diffusion
@MODELS.register_module()
class DiffusionExtractor(BaseModule):
    """``layer@t`` features of a :class:`~common.teachers.DiffusionTeacher` as ``[B, C, h, w]``.

    Images ``[0, 1]`` are mapped to the teacher's ``[-1, 1]``; the teacher does the rest (VAE,
    noise, its ensemble as a batch dimension, hooks with early exit). Several layers and/or
    timesteps come from one teacher call (one VAE pass, one batched UNet call) and are combined
    on the first one's grid (bilinear resize): concatenated over channels (``combine='concat'``,
    e.g. several decoder blocks) or averaged (``combine='mean'``, e.g. DistillDIFT's SDXL-Turbo
    teacher averaged over t = 51, 101, 151, 201).

    Args:
        teacher (dict | DiffusionTeacher): the teacher config (``type='DiffusionTeacher'``) or
            one already built. Its ``input_norm`` must be None.
        layer (str | list[str] | None): UNet module path(s) (e.g. DIFT's ``'up_blocks.1'``);
            overrides the teacher config's ``layers``. None: the config's layers.
        timestep (int | list[int] | None): likewise for ``timesteps`` (DIFT: 261).
        prompt_template (str | None): e.g. ``'a photo of a {category}'`` (DIFT's evaluation,
            DistillDIFT); formatted with each image's category, each distinct prompt encoded
            once by the teacher. None (default): the teacher's configured ``prompt`` for every
            image (SD-DINO's empty prompt). Only for text-conditioned teachers.
        combine (str): ``'concat'`` (default) or ``'mean'`` when there are several features
            (``'mean'`` needs equal channel counts).
    """

    def __init__(self, teacher, layer=None, timestep=None, prompt_template=None,
                 combine='concat', init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        layers = None if layer is None else \
            [layer] if isinstance(layer, str) else [str(v) for v in layer]
        timesteps = None if timestep is None else \
            [int(timestep)] if isinstance(timestep, (int, float)) else [int(t) for t in timestep]
        if isinstance(teacher, dict):
            teacher = dict(teacher)
            if layers is not None:
                teacher['layers'] = layers
            if timesteps is not None:
                teacher['timesteps'] = timesteps
            teacher = MODELS.build(teacher)
        self.teacher = teacher
        layers = layers if layers is not None else list(teacher.layers)
        timesteps = timesteps if timesteps is not None else list(teacher.timesteps)
        if combine not in ('concat', 'mean'):
            raise ValueError(f"DiffusionExtractor combine={combine!r}: use 'concat' or 'mean'.")
        missing = [f'{lay}@{t}' for lay in layers for t in timesteps
                   if lay not in teacher.layers or t not in teacher.timesteps]
        if missing:
            raise ValueError(
                f'DiffusionExtractor: the teacher given computes {teacher.feature_keys}, not '
                f'{missing}. Pass the teacher as a config dict (layers and timesteps are then set '
                f'in it) or build it with those layers and timesteps.')
        if teacher.input_norm is not None:
            raise ValueError(
                f'DiffusionExtractor feeds its teacher [-1, 1] images, but the teacher has '
                f'input_norm={teacher.input_norm}: remove input_norm from the teacher config.')
        if prompt_template is not None and not teacher._parts.is_text_conditioned:
            raise ValueError(
                f'DiffusionExtractor prompt_template={prompt_template!r}, but the teacher '
                f'({teacher.pretrained}) is not text-conditioned. Set prompt_template=None.')
        self.layers = layers
        self.timesteps = timesteps
        self.keys = [f'{lay}@{t}' for lay in layers for t in timesteps]
        # the first (for a single feature: the only) layer, timestep and key
        self.layer, self.timestep, self.key = layers[0], timesteps[0], self.keys[0]
        self.combine = combine
        self.prompt_template = prompt_template
        self.stride = None  # set by each forward: input pixels per feature cell

    def prompts(self, categories, n):
        """The per-image prompts for ``categories`` (None: the teacher's configured prompt)."""
        if self.prompt_template is None:
            return None
        if categories is None:
            raise ValueError(
                f'DiffusionExtractor prompt_template={self.prompt_template!r} needs the images\' '
                f'categories: call extractor(images, categories=[...]) with one name per image, '
                f'or set prompt_template=None to use the teacher\'s configured prompt.')
        categories = [categories] * n if isinstance(categories, str) else list(categories)
        if len(categories) != n:
            raise ValueError(f'DiffusionExtractor: {len(categories)} categories for {n} images.')
        return [self.prompt_template.format(category=c) for c in categories]

    def forward(self, images, categories=None):
        check_images(images, 'DiffusionExtractor')
        prompts = self.prompts(categories, len(images))
        found = self.teacher(images.float() * 2 - 1, prompts=prompts)
        feats = [found[k] for k in self.keys]
        grid = tuple(feats[0].shape[-2:])
        feats = [f if tuple(f.shape[-2:]) == grid else
                 F.interpolate(f, size=grid, mode='bilinear', align_corners=False) for f in feats]
        if len(feats) == 1:
            out = feats[0]
        elif self.combine == 'concat':
            out = torch.cat(feats, dim=1)
        else:
            channels = sorted({f.shape[1] for f in feats})
            if len(channels) != 1:
                raise ValueError(
                    f"DiffusionExtractor combine='mean' needs features with one channel count; "
                    f'{self.keys} have {channels}. Use combine=\'concat\' or layers of equal '
                    f'width.')
            out = torch.stack(feats).mean(dim=0)
        self.stride = images.shape[-1] / out.shape[-1]
        return out


# ---------------------------------------------------------------------------------------- fusion
def pca_project(feats, dim):
    """Project ``[B, C, h, w]`` features onto their top ``dim`` principal components, fitted on
    all ``B * h * w`` tokens together (centred by their mean); returns ``[B, dim, h, w]``.

    Exact (an eigendecomposition of the ``C x C`` covariance in float64, not the randomised
    ``torch.pca_lowrank`` SD-DINO calls), so deterministic; each component's sign is fixed so
    that its largest-magnitude loading is positive.
    """
    b, c, h, w = feats.shape
    if not 0 < dim <= c:
        raise ValueError(f'pca_dim={dim} must be in 1..{c} (the channels of this source).')
    tokens = feats.permute(0, 2, 3, 1).reshape(-1, c).double()
    tokens = tokens - tokens.mean(dim=0, keepdim=True)
    _, vectors = torch.linalg.eigh(tokens.T @ tokens)
    top = vectors.flip(-1)[:, :dim]  # eigh sorts ascending
    signs = torch.sign(top.gather(0, top.abs().argmax(dim=0, keepdim=True)))
    top = top * torch.where(signs == 0, torch.ones_like(signs), signs)
    out = (tokens @ top).to(feats.dtype)
    return out.reshape(b, h, w, dim).permute(0, 3, 1, 2)


@MODELS.register_module()
class FusedExtractor(BaseModule):
    """SD-DINO fusion: several extractors' features on one grid, concatenated with weights.

    Per source, in this order: optional PCA to ``pca_dim`` channels (at the source's own grid),
    bilinear resize to the common grid (``align_corners=False``), L2 normalisation over channels
    (per cell, after the resize, so every fused cell of a source has norm ``weight``), times its
    weight; then concatenation over channels. With unit weights and two sources, the negative L2
    distance SD-DINO ranks by is monotone in the cosine similarity of the fused features.

    The PCA is fitted on the whole batch's tokens. When a pair's source and target images are
    in the same batch (the correspondence model extracts them in one call) and the batch holds
    only that pair, this is SD-DINO's co-PCA; with larger batches the basis is shared by all of
    them. Either way a feature then depends on the rest of the batch, so such features are not
    cacheable per image. SD-DINO's randomised ``pca_lowrank`` is replaced by an exact PCA.

    Args:
        extractors (list[dict | nn.Module]): the sources.
        weights (list[float] | None): one per source (default all 1).
        size (str | tuple): the common grid: ``'first'`` (the first source's), ``'largest'``
            (the largest source grid) or ``(h, w)``.
        pca_dim (int | list | None): channels kept by PCA, one value for every source or one
            per source (None entries: no PCA for that source).
        normalize (bool): L2-normalise each source (default True). A nested fusion with
            ``normalize=False`` groups several layers of one model into one source normalised
            together, as SD-DINO does with its three SD layers.
        input_sizes (list | None): per source, the ``(h, w)`` (or one int for a square) its
            input images are resized to (bilinear, ``antialias=True``) before it runs, or None
            to take the frame as it is: DistillDIFT's teacher runs SDXL-Turbo at 980 px and
            DINOv2 at 434 px on the same images.
    """

    def __init__(self, extractors, weights=None, size='first', pca_dim=None, normalize=True,
                 input_sizes=None, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if not extractors:
            raise ValueError('FusedExtractor needs at least one extractor.')
        self.extractors = torch.nn.ModuleList([_build(cfg) for cfg in extractors])
        n = len(self.extractors)
        self.weights = [1.0] * n if weights is None else [float(w) for w in weights]
        pca = pca_dim if isinstance(pca_dim, (list, tuple)) else [pca_dim] * n
        if len(self.weights) != n or len(pca) != n:
            raise ValueError(f'FusedExtractor has {n} extractors but weights={weights!r} and '
                             f'pca_dim={pca_dim!r}: give one value per extractor.')
        self.pca_dims = [None if d is None else int(d) for d in pca]
        if not (size in ('first', 'largest')
                or (isinstance(size, (list, tuple)) and len(size) == 2)):
            raise ValueError(f"FusedExtractor size={size!r}: use 'first', 'largest' or (h, w).")
        self.size = size if isinstance(size, str) else tuple(int(s) for s in size)
        self.normalize = normalize
        sizes = [None] * n if input_sizes is None else list(input_sizes)
        if len(sizes) != n:
            raise ValueError(f'FusedExtractor has {n} extractors but input_sizes={input_sizes!r}: '
                             'give one (h, w), int or None per extractor.')
        self.input_sizes = [None if v is None else (int(v), int(v)) if isinstance(v, (int, float))
                            else tuple(int(x) for x in v) for v in sizes]

    @property
    def stride(self):
        return getattr(self.extractors[0], 'stride', None) if self.size == 'first' else None

    def _grid(self, feats):
        if self.size == 'first':
            return tuple(feats[0].shape[-2:])
        if self.size == 'largest':
            return max((tuple(f.shape[-2:]) for f in feats), key=lambda s: s[0] * s[1])
        return self.size

    def forward(self, images, categories=None):
        feats = []
        for extractor, size in zip(self.extractors, self.input_sizes):
            x = images
            if size is not None and tuple(images.shape[-2:]) != size:
                x = F.interpolate(images.float(), size=size, mode='bilinear',
                                  align_corners=False, antialias=True).clamp_(0, 1)
            feats.append(extractor(x, categories=categories))
        feats = [pca_project(f, d) if d is not None else f for f, d in zip(feats, self.pca_dims)]
        grid = self._grid(feats)
        fused = []
        for f, weight in zip(feats, self.weights):
            if tuple(f.shape[-2:]) != grid:
                f = F.interpolate(f, size=grid, mode='bilinear', align_corners=False)
            if self.normalize:
                f = F.normalize(f, dim=1)
            fused.append(f * weight)
        return torch.cat(fused, dim=1)


# ------------------------------------------------------------------------------------ baselines
@MODELS.register_module()
class PixelExtractor(BaseModule):
    """Raw RGB values as features (the first baseline): the ``[0, 1]`` images themselves, or
    average-pooled to a ``size = (h, w)`` grid (``adaptive_avg_pool2d``; exact block means when
    ``H, W`` are multiples of ``h, w``)."""

    def __init__(self, size=None, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.size = None if size is None else tuple(int(s) for s in size)
        self.stride = 1 if size is None else None

    def forward(self, images, categories=None):
        check_images(images, 'PixelExtractor')
        images = images.float()
        if self.size is None:
            return images
        return F.adaptive_avg_pool2d(images, self.size)


@MODELS.register_module()
class RandomInitExtractor(_FrozenMixin, BaseModule):
    """A randomly initialised, frozen network's feature map (the second baseline: what the
    architecture alone gives, without training).

    Args:
        backbone (dict): a registered backbone (e.g. ``dict(type='mmpretrain.ResNet',
            depth=18)``) returning a tensor or a tuple of feature maps.
        out_index (int): which map of a tuple output (default the last).
        seed (int): the weights are drawn under this seed (the global RNG is left as it was).
        normalize (bool): ImageNet-normalise the input (default True).
        frozen (bool): True (default) for the baseline; False trains it (see
            :class:`BackboneStudent`).
    """

    def __init__(self, backbone, out_index=-1, seed=0, normalize=True, frozen=True,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.backbone = _build(backbone)
            if hasattr(self.backbone, 'init_weights'):
                logger = MMLogger.get_current_instance()
                level = logger.level
                logger.setLevel(logging.WARNING)  # not the per-parameter init report
                try:
                    self.backbone.init_weights()
                finally:
                    logger.setLevel(level)
        self.backbone.is_init = True  # never re-drawn by a later init_weights
        self.out_index = out_index
        self.normalize = normalize
        self.frozen = frozen
        if frozen:
            self._freeze(self.backbone)
        self.stride = None  # set by each forward
        self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer('std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images, categories=None):
        check_images(images, type(self).__name__)
        x = images.float()
        if self.normalize:
            x = (x - self.mean) / self.std
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.backbone(x)
        if isinstance(out, (tuple, list)):
            out = out[self.out_index]
        self.stride = images.shape[-1] / out.shape[-1]
        return out.float()


@MODELS.register_module()
class BackboneStudent(RandomInitExtractor):
    """A trainable network's feature map: :class:`RandomInitExtractor` with ``frozen=False``
    (same arguments, same seeded initialisation), so a student distilled from a teacher starts
    from exactly the random-init baseline's weights. Load trained weights with ``init_cfg``."""

    def __init__(self, backbone, out_index=-1, seed=0, normalize=True, frozen=False,
                 init_cfg=None):
        super().__init__(backbone, out_index=out_index, seed=seed, normalize=normalize,
                         frozen=frozen, init_cfg=init_cfg)
