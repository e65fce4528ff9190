"""LoRA adapters on a diffusers UNet's attention projections, through ``peft``: DSD's
"attention-based prompt learning" and Diffusion-ITM's hard-negative fine-tuning train these.

* :func:`add_lora` injects adapters (diffusers' PEFT integration, ``unet.add_adapter``) into the
  projections ``targets`` names and freezes every other UNet weight:
  ``'all_attention'`` = ``to_q``, ``to_k``, ``to_v``, ``to_out.0`` of every ``attn1`` and ``attn2``
  (the released DSD code: 32 attention modules x 4 projections on SD 2.1-base),
  ``'cross_kv'`` = ``attn2.to_k`` and ``attn2.to_v`` only (Custom-Diffusion-style key/value
  tuning), or a list of module paths / regular expressions (full match) of ``nn.Linear`` modules.
* :func:`save_lora` writes ``pytorch_lora_weights.safetensors`` in diffusers' LoRA format (keys
  ``unet.<module>.lora.down/up.weight``, the adapter's ``LoraConfig`` in the safetensors metadata),
  written atomically; a stock pipeline loads it with ``pipe.load_lora_weights(folder)``.
* :func:`load_lora` reads such a file back into a UNet (ours or diffusers' format, also the old
  attention-processor key names ``...attn1.processor.to_q_lora.down.weight`` of DSD's release once
  converted to safetensors), checking that every key lands in a LoRA layer.

The one rule: LoRA files are read with ``safetensors`` only (tensors and a JSON header, no pickled
code), and a file loads completely or not at all: a key that fits no adapter, or an adapter weight
the file lacks, is an error naming both, never a silent partial load.
"""
import json
import os
import re

import torch

__all__ = ['TARGET_PRESETS', 'LORA_WEIGHT_NAME', 'LoRAError', 'lora_target_names', 'add_lora',
           'lora_layers', 'lora_parameters', 'lora_state_dict', 'save_lora', 'write_lora_file',
           'load_lora', 'read_lora_file']

LORA_WEIGHT_NAME = 'pytorch_lora_weights.safetensors'  # diffusers' LORA_WEIGHT_NAME_SAFE
METADATA_KEY = 'lora_adapter_metadata'  # diffusers' LORA_ADAPTER_METADATA_KEY
UNET_PREFIX = 'unet.'
# Full-match patterns over UNet module paths.
TARGET_PRESETS = {
    'all_attention': r'.*\.attn[12]\.(to_q|to_k|to_v|to_out\.0)',
    'cross_kv': r'.*\.attn2\.(to_k|to_v)',
}
ATTENTION_PROJECTION = re.compile(r'.*\.attn\d*\.(to_q|to_k|to_v|to_out\.0|add_[qkv]_proj)')
# LoraConfig fields a saved adapter may state (the rest of peft's dict is bookkeeping).
CONFIG_FIELDS = ('r', 'lora_alpha', 'lora_dropout', 'target_modules', 'rank_pattern',
                 'alpha_pattern', 'use_rslora', 'use_dora', 'bias')
SHOWN = 6


class LoRAError(ValueError):
    """A LoRA target, file or weight that does not fit the UNet (one-paragraph message)."""


def _listing(names, shown=SHOWN):
    names = list(names)
    more = f' (and {len(names) - shown} more)' if len(names) > shown else ''
    return ', '.join(names[:shown]) + more


def _projection_summary(unet):
    """The attention projections of ``unet`` in one sentence (for error messages)."""
    names = [n for n, m in unet.named_modules()
             if isinstance(m, torch.nn.Linear) and ATTENTION_PROJECTION.fullmatch(n)]
    owners = sorted({n.rsplit('.', 2 if n.endswith('.0') else 1)[0] for n in names})
    kinds = sorted({n[len(o) + 1:] for n in names for o in owners if n.startswith(o + '.')})
    return (f'{len(names)} attention projections: {", ".join(kinds)} of each of the '
            f'{len(owners)} attention modules {_listing(owners, 4)}')


def lora_target_names(unet, targets='all_attention'):
    """The sorted module paths of ``unet`` that ``targets`` selects (see module docstring).

    Raises :class:`LoRAError` for an unknown preset, an entry that matches no ``nn.Linear``
    module, or an empty selection.
    """
    linear = [n for n, m in unet.named_modules() if isinstance(m, torch.nn.Linear)]
    if isinstance(targets, str):
        if targets not in TARGET_PRESETS:
            raise LoRAError(
                f'LoRA targets={targets!r} is not a preset; use one of {sorted(TARGET_PRESETS)} '
                f'or a list of module paths / regular expressions of the UNet\'s linear layers, '
                f'e.g. [\'.*attn2.to_k\', \'.*attn2.to_v\'] (the UNet has '
                f'{_projection_summary(unet)}).')
        entries = [TARGET_PRESETS[targets]]
    elif isinstance(targets, (list, tuple)) and targets and \
            all(isinstance(t, str) and t for t in targets):
        entries = list(targets)
    else:
        raise LoRAError(
            f'LoRA targets={targets!r} must be a preset name ({sorted(TARGET_PRESETS)}) or a '
            f'non-empty list of module paths / regular expressions (strings).')
    selected = set()
    for entry in entries:
        try:
            pattern = re.compile(entry)
        except re.error as err:
            raise LoRAError(f'LoRA target {entry!r} is not a valid regular expression ({err}); '
                            f'escape dots as \\. or give the exact module path.') from None
        hits = [n for n in linear if n == entry or pattern.fullmatch(n)]
        if not hits:
            raise LoRAError(
                f'LoRA target {entry!r} matches no linear layer of the UNet ({type(unet).__name__}'
                f'); a target is a module path or a regular expression matching whole paths of '
                f'nn.Linear modules. The UNet has {_projection_summary(unet)}; e.g. '
                f'\'.*attn2\\.to_k\' selects every cross-attention key projection.')
        selected.update(hits)
    return sorted(selected)


def add_lora(unet, targets='all_attention', rank=4, alpha=None, dropout=0.0,
             adapter_name='default'):
    """Inject LoRA adapters into ``unet`` (in place) and freeze every non-LoRA weight.

    Args:
        unet: a diffusers model with the PEFT integration (``UNet2DConditionModel``).
        targets: ``'all_attention'``, ``'cross_kv'`` or a list of module paths / regexes.
        rank (int): LoRA rank (DSD: 4).
        alpha (float | None): LoRA alpha; the update is scaled by ``alpha / rank``. None: equal
            to ``rank`` (scale 1, as diffusers' former LoRA attention processors).
        dropout (float): dropout on the LoRA branch's input (active in ``train()`` mode).
    Returns the list of adapted module paths. The new ``lora_B`` weights are zero, so the UNet's
    output is unchanged until training. The LoRA weights are float32 even in a float16 / bfloat16
    UNet (peft casts the layer input to them), as diffusers' mixed-precision LoRA training does.
    """
    from peft import LoraConfig
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise LoRAError(f'LoRA rank={rank!r} must be a positive integer (DSD uses 4).')
    if alpha is not None and not (isinstance(alpha, (int, float)) and alpha > 0):
        raise LoRAError(f'LoRA alpha={alpha!r} must be a positive number, or None for '
                        f'alpha = rank (scale 1).')
    if not 0.0 <= float(dropout) < 1.0:
        raise LoRAError(f'LoRA dropout={dropout!r} must be in [0, 1).')
    if adapter_name in (getattr(unet, 'peft_config', None) or {}):
        raise LoRAError(f'The UNet already has a LoRA adapter named {adapter_name!r}; load '
                        f'weights into it with load_lora, or use another adapter_name.')
    names = lora_target_names(unet, targets)
    config = LoraConfig(r=rank, lora_alpha=float(rank if alpha is None else alpha),
                        lora_dropout=float(dropout), target_modules=names,
                        init_lora_weights=True)
    unet.requires_grad_(False)
    unet.add_adapter(config, adapter_name=adapter_name)
    for _, param in lora_parameters(unet, adapter_name):
        if param.is_floating_point() and param.dtype != torch.float64:
            param.data = param.data.float()  # trained in float32 whatever the UNet's dtype
        param.requires_grad_(True)
    return names


def lora_layers(unet):
    """``{module path: peft LoraLayer}`` of ``unet``."""
    from peft.tuners.lora import LoraLayer
    return {n: m for n, m in unet.named_modules() if isinstance(m, LoraLayer)}


def lora_parameters(unet, adapter_name='default'):
    """``[(name, parameter)]`` of the adapter ``adapter_name`` (peft names, with the adapter)."""
    marker = f'.{adapter_name}.'
    return [(n, p) for n, p in unet.named_parameters()
            if 'lora_' in n and (marker in n or n.endswith(f'.{adapter_name}'))]


def lora_state_dict(unet, adapter_name='default'):
    """The adapter's weights in peft's format (``<module>.lora_A.weight``, no adapter name)."""
    from peft.utils import get_peft_model_state_dict
    if adapter_name not in (getattr(unet, 'peft_config', None) or {}):
        raise LoRAError(f'The UNet has no LoRA adapter named {adapter_name!r} (it has '
                        f'{sorted(getattr(unet, "peft_config", None) or {}) or "none"}); add one '
                        f'with add_lora or load_lora first.')
    return get_peft_model_state_dict(unet, adapter_name=adapter_name)


def _adapter_metadata(unet, adapter_name):
    config = unet.peft_config[adapter_name].to_dict()
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()
            if k in CONFIG_FIELDS}


def save_lora(unet, folder, adapter_name='default'):
    """Write ``folder/pytorch_lora_weights.safetensors`` (diffusers' LoRA format) atomically.

    Other files in ``folder`` are left alone; an existing weight file is replaced only once the
    new one is completely written. Returns the file's path.
    """
    return write_lora_file(folder, lora_state_dict(unet, adapter_name),
                           _adapter_metadata(unet, adapter_name))


def write_lora_file(folder, state, config):
    """Write a UNet LoRA given as a peft-format state (``<module>.lora_A.weight`` /
    ``lora_B.weight``) and its ``LoraConfig`` fields (``r``, ``lora_alpha``, ``target_modules``,
    ...) as ``folder/pytorch_lora_weights.safetensors`` through diffusers'
    ``StableDiffusionPipeline.save_lora_weights``, atomically (see :func:`save_lora`)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    from common.io.atomic import atomic_path
    state = convert_state_dict_to_diffusers(dict(state))
    state = {k: v.detach().to('cpu', copy=True).contiguous() for k, v in state.items()}
    folder = os.path.expanduser(os.fspath(folder))
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise LoRAError(f'{folder} exists and is not a folder; LoRA weights are saved as '
                        f'<folder>/{LORA_WEIGHT_NAME}. Choose a folder path.')
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LORA_WEIGHT_NAME)
    config = {k: (sorted(v) if isinstance(v, (set, tuple)) else v) for k, v in config.items()
              if k in CONFIG_FIELDS}
    with atomic_path(path) as tmp:
        StableDiffusionPipeline.save_lora_weights(
            folder, unet_lora_layers=state, weight_name=os.path.basename(tmp),
            unet_lora_adapter_metadata=config, safe_serialization=True)
    return path


def _weight_file(path):
    path = os.path.expanduser(os.fspath(path))
    if os.path.isdir(path):
        file = os.path.join(path, LORA_WEIGHT_NAME)
        if not os.path.isfile(file):
            others = sorted(os.listdir(path))
            hint = (' It holds pickled weights (.bin); they are never unpickled here: convert '
                    'them once to safetensors on a machine you trust.'
                    if any(n.endswith(('.bin', '.pt', '.pth')) for n in others) else '')
            raise LoRAError(
                f'LoRA folder {path!r} has no {LORA_WEIGHT_NAME} (it holds '
                f'{_listing(others) or "nothing"}).{hint} Pass a folder written by save_lora / '
                f'tools/export_itm_lora.py or diffusers\' save_lora_weights, or the path of a '
                f'.safetensors LoRA file.')
        return file
    if os.path.isfile(path):
        if not path.endswith('.safetensors'):
            raise LoRAError(f'LoRA weights {path!r} are not a .safetensors file; pickled '
                            f'weights (.bin/.pt) are never unpickled here. Convert them once to '
                            f'safetensors on a machine you trust.')
        return path
    raise LoRAError(f'LoRA weights {path!r}: no such file or folder (relative paths are resolved '
                    f'from {os.getcwd()!r}). Pass the folder save_lora or '
                    f'tools/export_itm_lora.py wrote.')


def read_lora_file(path):
    """``(unet_state, config)`` of a LoRA folder or ``.safetensors`` file.

    ``unet_state`` is in peft's format (``<module>.lora_A.weight``), the ``unet.`` prefix and old
    attention-processor names converted; ``config`` the saved ``LoraConfig`` fields (empty when
    the file has no metadata).
    """
    from diffusers.utils import convert_unet_state_dict_to_peft
    from safetensors import SafetensorError, safe_open
    file = _weight_file(path)
    try:
        with safe_open(file, framework='pt') as handle:
            state = {k: handle.get_tensor(k) for k in handle.keys()}
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise LoRAError(f'{file} is not a readable safetensors file ({err}); it may be '
                        f'truncated. Export the LoRA weights again.') from None
    other = sorted({k.split('.', 1)[0] for k in state if k.startswith('text_encoder')})
    if other:
        raise LoRAError(
            f'{file} holds LoRA weights for {other} besides the UNet; only UNet LoRA is '
            f'supported here (a text-encoder LoRA would be silently ignored). Save the UNet '
            f'adapter alone.')
    if any(k.startswith(UNET_PREFIX) for k in state):
        state = {k[len(UNET_PREFIX):]: v for k, v in state.items() if k.startswith(UNET_PREFIX)}
    state = convert_unet_state_dict_to_peft(
        {k.replace('.processor.', '.'): v for k, v in state.items()})
    raw = json.loads(metadata.get(METADATA_KEY) or '{}')
    config = {k[len(UNET_PREFIX):]: v for k, v in raw.items() if k.startswith(UNET_PREFIX)}
    config = {k: v for k, v in config.items() if k in CONFIG_FIELDS}
    return state, config


def _module_of(key):
    return key.split('.lora_', 1)[0]


def load_lora(unet, path, adapter_name='default'):
    """Load a LoRA folder (or ``.safetensors`` file) into ``unet``; returns the adapted paths.

    Without an adapter ``adapter_name`` yet, one is added with the file's configuration (its
    metadata; a file without metadata: rank from the weights' shapes, alpha = rank, as diffusers
    does). With one already there (e.g. the matcher's configured ``lora``), its modules and ranks
    must be the file's. Every weight must fit (see module docstring); non-LoRA weights stay
    frozen.
    """
    from peft.utils import set_peft_model_state_dict
    state, config = read_lora_file(path)
    modules = sorted({_module_of(k) for k in state})
    bad = [k for k in state if '.lora_' not in k]
    ranks = {_module_of(k): int(v.shape[0]) for k, v in state.items() if '.lora_A.' in k}
    if bad or not ranks:
        raise LoRAError(f'{_weight_file(path)} is not a LoRA file: keys {_listing(bad or ["none"])}'
                        f' are not LoRA weights (<module>.lora_A/lora_B.weight).')
    existing = (getattr(unet, 'peft_config', None) or {}).get(adapter_name)
    if existing is None:
        unknown = [m for m in modules if m not in dict(unet.named_modules())]
        if unknown:
            raise LoRAError(
                f'{_weight_file(path)} adapts modules the UNet does not have '
                f'({_listing(unknown)}): it was trained on another architecture. The UNet has '
                f'{_projection_summary(unet)}.')
        rank = int(config.get('r') or max(ranks.values()))
        if set(ranks.values()) - {rank}:
            raise LoRAError(f'{_weight_file(path)} mixes LoRA ranks {sorted(set(ranks.values()))}'
                            f' where rank {rank} was expected; re-save it with save_lora.')
        add_lora(unet, targets=[re.escape(m) for m in modules], rank=rank,
                 alpha=config.get('lora_alpha'), adapter_name=adapter_name)
    else:
        have = set(lora_layers(unet))
        if set(modules) != have or any(r != existing.r for r in ranks.values()):
            raise LoRAError(
                f'{_weight_file(path)} does not fit the LoRA adapter already on the UNet: the file '
                f'adapts {len(modules)} modules with rank {sorted(set(ranks.values()))}, the '
                f'adapter {len(have)} with rank {existing.r} (only in the file: '
                f'{_listing(sorted(set(modules) - have)) or "none"}; only on the UNet: '
                f'{_listing(sorted(have - set(modules))) or "none"}). Configure lora=dict(targets='
                f'..., rank=...) as the weights were trained, or lora=None to take the file\'s.')
    expected = set(lora_state_dict(unet, adapter_name))
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise LoRAError(
            f'{_weight_file(path)} does not fill the UNet\'s LoRA adapter: missing '
            f'{_listing(missing) or "nothing"}; not in the adapter '
            f'{_listing(unexpected) or "nothing"}. Load the file the adapter was saved to, with '
            f'the same targets.')
    result = set_peft_model_state_dict(unet, state, adapter_name=adapter_name)
    left = [k for k in getattr(result, 'unexpected_keys', []) or [] if 'lora_' in k]
    if left:
        raise LoRAError(f'{_weight_file(path)}: weights {_listing(left)} did not load.')
    return modules
