"""Read cross-attention logits out of a stock diffusers UNet: DSD's attention score and heat maps.

A :class:`CrossAttentionCapture` wraps the attention processor of chosen cross-attention modules
(``diffusers.models.attention_processor.Attention``) in a capturing processor. On each call it
computes the queries and keys with the module's own ``to_q`` / ``to_k`` (so ``peft`` LoRA layers
on them count), the per-head logits ``S = attn.scale * q k^T`` over the text tokens, and records

* the DSD score: ``logsumexp`` of ``S`` over the tokens (padding tokens masked out when
  ``mask_padding``; the reference uses all tokens, padding included: ``mask_padding=False``),
  averaged over heads and query pixels: one number per batch row;
* optionally (``record_maps``) the heat map: the attention mass (``softmax(S)`` over all tokens,
  as the model attends) that lands on the text's word tokens (not padding, not the start and end
  tokens), averaged over heads: one value per query pixel.

The one rule: the capturing processor then calls the module's original processor unchanged, so
the UNet's output is exactly the stock output (no forward is copied or changed). Keep the capture
installed while a backward pass may still run: under gradient checkpointing the forward is
recomputed during the backward and must repeat the same operations.

A capture records only the UNet calls whose ``encoder_hidden_states`` tensor was registered with
:meth:`CrossAttentionCapture.set_token_mask` (with its padding mask), looked up by identity: the
recomputation of a checkpointed forward finds the mask of its own call, and other callers of the
same UNet (or another capture sharing it) pay nothing.

Layer selection: ``'dsd_default'`` is the reference's default, for each of down / mid / up the
last block that has cross-attention, every attention (``Transformer2DModel``) in it, its last
transformer block's ``attn2``. For SD 2.1-base that is ``down_blocks.2`` (2 attentions),
``mid_block`` (1) and ``up_blocks.3`` (3): 6 layers. Or an explicit list of module paths, each a
cross-attention ``Attention`` module.
"""
import difflib
import weakref

import torch

from common.teachers.errors import TeacherConfigError

DEFAULT_LAYERS = 'dsd_default'


def _attention_class():
    from diffusers.models.attention_processor import Attention
    return Attention


def cross_attention_layers(unet):
    """Module paths of every cross-attention ``Attention`` module of ``unet``, in the order the
    modules are defined."""
    attention = _attention_class()
    return [name for name, m in unet.named_modules()
            if isinstance(m, attention) and getattr(m, 'is_cross_attention', False)]


def _last_cross_attention_block(prefix, blocks):
    """``[path, ...]`` of the last block in ``blocks`` (index, block) that has cross-attention:
    the last transformer block's ``attn2`` of each of its attentions."""
    attention = _attention_class()
    chosen = []
    for index, block in blocks:
        paths = []
        for j, transformer in enumerate(getattr(block, 'attentions', None) or []):
            tblocks = getattr(transformer, 'transformer_blocks', None)
            if not tblocks:
                continue
            attn2 = getattr(tblocks[-1], 'attn2', None)
            if isinstance(attn2, attention) and attn2.is_cross_attention:
                where = f'{prefix}.{index}' if index is not None else prefix
                paths.append(f'{where}.attentions.{j}.transformer_blocks.{len(tblocks) - 1}.attn2')
        if paths:
            chosen = paths
    return chosen


def default_layers(unet):
    """The reference's default layers (see the module docstring)."""
    layers = []
    layers += _last_cross_attention_block('down_blocks', enumerate(unet.down_blocks))
    mid = getattr(unet, 'mid_block', None)
    if mid is not None:
        layers += _last_cross_attention_block('mid_block', [(None, mid)])
    layers += _last_cross_attention_block('up_blocks', enumerate(unet.up_blocks))
    if not layers:
        raise TeacherConfigError(
            f'The UNet ({type(unet).__name__}) has no cross-attention layer (no attn2 in any '
            f'transformer block), so it has no text-to-image attention to score. Use a '
            f'text-conditioned UNet2DConditionModel (a Stable Diffusion pipeline).')
    return layers


def resolve_layers(unet, layers=DEFAULT_LAYERS):
    """``layers`` as a list of cross-attention module paths (``'dsd_default'`` or a list)."""
    if layers == DEFAULT_LAYERS:
        return default_layers(unet)
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, (list, tuple)) or not layers or \
            not all(isinstance(n, str) for n in layers):
        raise TeacherConfigError(
            f"layers={layers!r} must be 'dsd_default' or a non-empty list of module paths of "
            f"cross-attention modules, e.g. ['mid_block.attentions.0.transformer_blocks.0.attn2'].")
    available = dict(unet.named_modules())
    cross = cross_attention_layers(unet)
    attention = _attention_class()
    for name in layers:
        module = available.get(name)
        if module is None:
            near = difflib.get_close_matches(name, cross, n=5, cutoff=0.5) or cross[:5]
            raise TeacherConfigError(
                f'Unknown layer {name!r}: the UNet ({type(unet).__name__}) has no module of that '
                f'path. Nearest cross-attention modules: {near}. Pick module paths from '
                f"cross_attention_layers(unet) ({len(cross)} of them) or use 'dsd_default'.")
        if not isinstance(module, attention):
            near = difflib.get_close_matches(name, cross, n=5, cutoff=0.5) or cross[:5]
            raise TeacherConfigError(
                f'Layer {name!r} is a {type(module).__name__}, not a diffusers Attention module, '
                f'so it has no attention logits to score. Name a cross-attention module (an '
                f'attn2 of a transformer block), e.g. {near}.')
        if not getattr(module, 'is_cross_attention', False):
            sibling = name[:-len('attn1')] + 'attn2' if name.endswith('attn1') else None
            hint = f'{sibling!r}' if sibling in cross else \
                str(difflib.get_close_matches(name, cross, n=3, cutoff=0.5) or cross[:3])
            raise TeacherConfigError(
                f'Layer {name!r} is self-attention, not cross-attention: its keys come from the '
                f'image, not from the text, so it cannot score a caption. Use a cross-attention '
                f'module instead, e.g. {hint}.')
    return list(dict.fromkeys(layers))


def word_token_mask(mask):
    """The word tokens of padding masks ``mask`` (B, L) bool (True = real token): the real
    tokens without the first (start) and last (end) one."""
    mask = mask.bool()
    words = mask.clone()
    words[:, 0] = False
    last = mask.long().cumsum(1).argmax(1)  # the last True position of each row
    words[torch.arange(mask.shape[0], device=mask.device), last] = False
    return words


class _CapturingProcessor:
    """Records the logits of one module, then returns its original processor's output."""

    def __init__(self, capture, name, inner):
        self.capture = capture
        self.name = name
        self.inner = inner

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        if encoder_hidden_states is not None:
            self.capture._record(self.name, attn, hidden_states, encoder_hidden_states, temb)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                          *args, **kwargs)


def attention_logits(attn, hidden_states, encoder_hidden_states, temb=None):
    """Per-head logits ``attn.scale * q k^T`` (B, heads, pixels, tokens) in float32, with the
    same input handling as diffusers' stock processors before their ``to_q`` / ``to_k``."""
    x = hidden_states
    if attn.spatial_norm is not None:
        x = attn.spatial_norm(x, temb)
    if x.ndim == 4:
        b, c, h, w = x.shape
        x = x.view(b, c, h * w).transpose(1, 2)
    if attn.group_norm is not None:
        x = attn.group_norm(x.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(x)
    context = encoder_hidden_states
    if attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    key = attn.to_k(context)
    batch, head_dim = query.shape[0], key.shape[-1] // attn.heads
    query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    return torch.matmul(query.float(), key.float().transpose(-1, -2)) * attn.scale


class CrossAttentionCapture:
    """Capture DSD attention scores (and heat maps) from chosen cross-attention modules.

    Use as a context manager (``with CrossAttentionCapture(unet) as cap: ...``) or call
    :meth:`install` / :meth:`remove`. Per UNet call: :meth:`clear`, :meth:`set_token_mask` for the
    ``encoder_hidden_states`` passed, run the UNet, then :meth:`row_scores` (B,) and, with
    ``record_maps``, :meth:`row_maps`.

    Args:
        unet: a diffusers ``UNet2DConditionModel`` (or any module tree of ``Attention`` modules).
        layers (str | list[str]): ``'dsd_default'`` or cross-attention module paths.
        mask_padding (bool): leave padding tokens out of the log-sum-exp (default); False is the
            reference (all tokens, padding included).
    """

    def __init__(self, unet, layers=DEFAULT_LAYERS, mask_padding=True):
        self.unet = unet
        self.layers = resolve_layers(unet, layers)
        modules = dict(unet.named_modules())
        self.modules = {name: modules[name] for name in self.layers}
        self.mask_padding = bool(mask_padding)
        self.record_maps = False
        self.scores = {}  # layer -> (B,) log-sum-exp averaged over heads and pixels
        self.maps = {}  # layer -> (B, pixels) word-token attention mass averaged over heads
        self._processors = {}  # layer -> the capturing processor this capture installed
        self._masks = {}  # id(encoder_hidden_states) -> (weakref to it, mask (B, L) bool | None)

    # ------------------------------------------------------------------ installation
    @property
    def installed(self):
        return bool(self._processors)

    def install(self):
        """Wrap the processors of the chosen modules (idempotent). Several captures may share a
        UNet: each wraps what it finds, and each records only the calls registered with it."""
        if self.installed:
            return self
        for name, module in self.modules.items():
            self._processors[name] = _CapturingProcessor(self, name, module.processor)
            module.set_processor(self._processors[name])
        return self

    def remove(self):
        """Take this capture's processors out (restoring the original ones) and drop every
        record."""
        for name, ours in self._processors.items():
            module = self.modules[name]
            if module.processor is ours:
                module.set_processor(ours.inner)
                continue
            outer = module.processor  # another capture installed later wraps ours: unlink it
            while isinstance(outer, _CapturingProcessor) and outer.inner is not ours:
                outer = outer.inner
            if isinstance(outer, _CapturingProcessor):
                outer.inner = ours.inner
        self._processors = {}
        self.clear()
        self._masks = {}

    def __enter__(self):
        return self.install()

    def __exit__(self, *exc):
        self.remove()
        return False

    # ------------------------------------------------------------------ per call
    def clear(self):
        """Forget the records of the previous UNet call."""
        self.scores = {}
        self.maps = {}

    def set_token_mask(self, encoder_hidden_states, mask):
        """Register the text embeddings ``encoder_hidden_states`` (B, L, D) of the next UNet call
        and their padding mask (B, L) bool (True = a real token; None: every token is real).
        Only calls with registered embeddings are recorded."""
        if mask is not None:
            mask = torch.as_tensor(mask, dtype=torch.bool, device=encoder_hidden_states.device)
            if mask.shape != encoder_hidden_states.shape[:2]:
                raise ValueError(f'token mask of shape {tuple(mask.shape)} does not match the '
                                 f'text embeddings {tuple(encoder_hidden_states.shape)} (B, L, D).')
        self._masks = {k: v for k, v in self._masks.items() if v[0]() is not None}
        self._masks[id(encoder_hidden_states)] = (weakref.ref(encoder_hidden_states), mask)

    def _lookup(self, encoder_hidden_states):
        """``(registered, mask)`` of these embeddings (by identity)."""
        entry = self._masks.get(id(encoder_hidden_states))
        if entry is not None and entry[0]() is encoder_hidden_states:
            return True, entry[1]
        return False, None

    def _record(self, name, attn, hidden_states, encoder_hidden_states, temb):
        registered, mask = self._lookup(encoder_hidden_states)
        if not registered:
            return  # another caller's UNet call (or embeddings the UNet transformed)
        logits = attention_logits(attn, hidden_states, encoder_hidden_states, temb)
        scored = logits
        if self.mask_padding and mask is not None:
            scored = logits.masked_fill(~mask[:, None, None, :], float('-inf'))
        self.scores[name] = scored.logsumexp(-1).mean(dim=(1, 2))
        if self.record_maps:
            probs = logits.softmax(-1)
            if mask is None:
                mask = torch.ones(probs.shape[0], probs.shape[-1], dtype=torch.bool,
                                  device=probs.device)
            words = word_token_mask(mask)
            self.maps[name] = (probs * words[:, None, None, :].float()).sum(-1).mean(1)

    def _missing(self, records):
        missing = [n for n in self.layers if n not in records]
        if missing:
            raise TeacherConfigError(
                f'No attention was recorded for the layers {missing} in the last UNet call: the '
                f'capture is not installed (call install() or use it as a context manager), the '
                f'call\'s encoder_hidden_states were not registered with set_token_mask, or the '
                f'UNet transformed them before its cross-attention (e.g. an encoder_hid_proj; '
                f'not supported) or never ran those layers.')

    def row_scores(self):
        """(B,) the DSD attention score of each batch row of the last UNet call: the mean over
        the captured layers of each layer's head- and pixel-averaged log-sum-exp."""
        self._missing(self.scores)
        return torch.stack([self.scores[n] for n in self.layers]).mean(0)

    def row_maps(self):
        """``{layer: (B, pixels)}`` word-token attention mass of the last call (with
        ``record_maps``)."""
        self._missing(self.maps)
        return {n: self.maps[n] for n in self.layers}
