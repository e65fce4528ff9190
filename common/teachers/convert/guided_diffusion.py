"""OpenAI guided-diffusion UNet checkpoints → diffusers ``UNet2DModel`` (+ a matching scheduler).

guided-diffusion checkpoints are bare state dicts; the architecture lives in the command-line flags
the model was trained with (``--num_channels 192 --num_res_blocks 3 ...``). The flags are taken
here under their original names and with their original defaults (:class:`GuidedDiffusionFlags`).

How the two implementations line up (checked against diffusers 0.42):

* time embedding: both use ``[cos, sin]`` sinusoids over ``model_channels`` frequencies followed by
  Linear-SiLU-Linear; the class embedding is added *after* that MLP in both.
* every level has ``num_res_blocks`` ResBlocks (+ attention at the listed resolutions) and, except
  the last, a downsampler: a stride-2 conv, or a ResBlock with ``down=True`` when
  ``resblock_updown``. The output path mirrors it with ``num_res_blocks + 1`` blocks per level.
* ResBlocks and attention blocks compute the same thing (attention adds its residual and diffusers'
  output rescale factor is 1). The parameters differ in layout only: attention uses one ``qkv``
  conv1d whose output channels are ordered ``[head][q|k|v][ch]`` (legacy order) or
  ``[q|k|v][head][ch]`` (``use_new_attention_order``); diffusers has ``to_q/to_k/to_v`` linears.
* diffusers drops the GroupNorm of the *middle* attention block when
  ``resnet_time_scale_shift='scale_shift'`` unless ``attn_norm_num_groups`` is set; guided-diffusion
  always has it, so the config sets ``attn_norm_num_groups=32``.
"""
import dataclasses
import os

import torch

from ...io.atomic_folder import save_pretrained_atomically

NUM_CLASSES = 1000  # guided-diffusion's class-conditional models are ImageNet models
GROUPS = 32  # guided-diffusion's GroupNorm32

# guided-diffusion's per-resolution channel multipliers when --channel_mult is ''.
DEFAULT_CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}

# diffusers ResnetBlock2D submodule -> guided-diffusion ResBlock submodule
RESBLOCK_NAMES = {
    'norm1': 'in_layers.0',
    'conv1': 'in_layers.2',
    'time_emb_proj': 'emb_layers.1',
    'norm2': 'out_layers.0',
    'conv2': 'out_layers.3',
    'conv_shortcut': 'skip_connection',
}
# diffusers Attention submodule -> guided-diffusion AttentionBlock submodule
ATTENTION_NAMES = {
    'group_norm': 'norm',
    'to_q': 'qkv',
    'to_k': 'qkv',
    'to_v': 'qkv',
    'to_out.0': 'proj_out',
}
QKV_INDEX = {'to_q': 0, 'to_k': 1, 'to_v': 2}

LAYOUT_FLAGS = ('--image_size/--channel_mult', '--num_res_blocks', '--attention_resolutions',
                '--resblock_updown', '--class_cond')
SHAPE_FLAGS = ('--num_channels', '--channel_mult', '--learn_sigma', '--use_scale_shift_norm')


class GuidedDiffusionConversionError(ValueError):
    """The checkpoint and the flags do not describe a model this converter can write."""


@dataclasses.dataclass(frozen=True)
class GuidedDiffusionFlags:
    """guided-diffusion's model flags, with the defaults of its ``script_util``."""
    image_size: int = 64
    num_channels: int = 128
    num_res_blocks: int = 2
    attention_resolutions: str = '16,8'
    num_heads: int = 4
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    channel_mult: str = ''
    learn_sigma: bool = False
    class_cond: bool = False
    use_scale_shift_norm: bool = True
    resblock_updown: bool = False
    use_new_attention_order: bool = False
    dropout: float = 0.0


@dataclasses.dataclass(frozen=True)
class ModulePair:
    """One guided-diffusion module and the UNet2DModel module that takes its weights."""
    source: str
    target: str
    kind: str = 'same'  # 'same' (identical parameter names), 'resblock' or 'attention'
    heads: int = 0  # attention only: guided-diffusion's head count, needed to split qkv


# --------------------------------------------------------------------------- architecture

def _parse_flags(flags):
    return flags if isinstance(flags, GuidedDiffusionFlags) else GuidedDiffusionFlags(**flags)


def channel_multipliers(flags):
    """The per-level channel multipliers (``--channel_mult`` or the per-resolution default)."""
    if flags.channel_mult:
        try:
            mults = tuple(float(m) for m in str(flags.channel_mult).split(','))
        except ValueError:
            raise GuidedDiffusionConversionError(
                f'--channel_mult {flags.channel_mult!r} is not a comma-separated list of numbers '
                f"(e.g. '1,2,3,4').") from None
        return tuple(int(m) if m == int(m) else m for m in mults)
    if flags.image_size not in DEFAULT_CHANNEL_MULT:
        raise GuidedDiffusionConversionError(
            f'--image_size {flags.image_size} has no default channel multipliers in '
            f'guided-diffusion (only {sorted(DEFAULT_CHANNEL_MULT)}); pass the --channel_mult the '
            f"model was trained with, e.g. --channel_mult '1,2,2,2'.")
    return DEFAULT_CHANNEL_MULT[flags.image_size]


def level_channels(flags):
    """Channels of each level, as guided-diffusion computes them (``int(mult * num_channels)``)."""
    return tuple(int(m * flags.num_channels) for m in channel_multipliers(flags))


def attention_levels(flags, num_levels):
    """Levels with attention: level ``i`` runs at ``image_size / 2**i`` pixels."""
    try:
        resolutions = [int(r) for r in str(flags.attention_resolutions).split(',') if r.strip()]
    except ValueError:
        raise GuidedDiffusionConversionError(
            f'--attention_resolutions {flags.attention_resolutions!r} is not a comma-separated '
            f"list of resolutions (e.g. '32,16,8').") from None
    factors = {flags.image_size // r for r in resolutions if r > 0}
    return frozenset(level for level in range(num_levels) if 2 ** level in factors)


def attention_heads(flags, channels, upsampling=False):
    """guided-diffusion's head count for an attention block with ``channels`` channels."""
    if flags.num_head_channels != -1:
        if channels % flags.num_head_channels:
            raise GuidedDiffusionConversionError(
                f'--num_head_channels {flags.num_head_channels} does not divide the {channels} '
                f'channels of an attention block; the original model could not have been built '
                f'with these flags either.')
        return channels // flags.num_head_channels
    heads = flags.num_heads_upsample if upsampling and flags.num_heads_upsample != -1 \
        else flags.num_heads
    if heads < 1 or channels % heads:
        raise GuidedDiffusionConversionError(
            f'{heads} attention heads do not divide the {channels} channels of an attention '
            f'block; check --num_heads/--num_heads_upsample/--num_head_channels.')
    return heads


def _attention_head_dim(flags, channels, levels):
    """UNet2DModel's single ``attention_head_dim`` that reproduces every block's head count."""
    if flags.num_head_channels != -1:
        for c in [channels[i] for i in levels] + [channels[-1]]:
            attention_heads(flags, c)  # raises when the head size does not divide a block
        return flags.num_head_channels
    blocks = [(channels[i], attention_heads(flags, channels[i])) for i in levels]
    blocks += [(channels[i], attention_heads(flags, channels[i], upsampling=True)) for i in levels]
    blocks.append((channels[-1], attention_heads(flags, channels[-1])))
    if all(heads == 1 for _, heads in blocks):
        return None  # one head per block: UNet2DModel uses each block's width as head size
    head_dims = sorted({c // heads for c, heads in blocks})
    if len(head_dims) > 1:
        raise GuidedDiffusionConversionError(
            f'--num_heads {flags.num_heads} (with --num_head_channels -1) gives attention heads '
            f'of {head_dims} channels in different blocks, but diffusers\' UNet2DModel has one '
            f'attention_head_dim for the whole network and cannot express this model. Models '
            f'trained with a fixed --num_head_channels (e.g. 64) or with --num_heads 1 are '
            f'supported.')
    return head_dims[0]


def unet2d_config_from_flags(flags=None, **kwargs):
    """The ``UNet2DModel`` config (a dict) of the network that guided-diffusion builds from flags.

    Takes a :class:`GuidedDiffusionFlags` or its fields as keyword arguments.
    """
    flags = _parse_flags(flags if flags is not None else kwargs)
    channels = level_channels(flags)
    if channels[0] != flags.num_channels:
        mults = channel_multipliers(flags)
        raise GuidedDiffusionConversionError(
            f'--channel_mult {mults} starts with {mults[0]}; guided-diffusion then builds its '
            f'first level with {channels[0]} channels but its timestep embedding with '
            f'{flags.num_channels}, while diffusers\' UNet2DModel derives both from the first '
            f'level, so this model cannot be expressed (models whose channel_mult starts with 1 '
            f'are supported).')
    bad = [c for c in channels if c % GROUPS]
    if bad:
        raise GuidedDiffusionConversionError(
            f'level widths {bad} are not multiples of {GROUPS}; guided-diffusion normalizes with '
            f'{GROUPS} groups, so check --num_channels and --channel_mult.')
    levels = attention_levels(flags, len(channels))
    with_attention = [i in levels for i in range(len(channels))]
    plain_down = 'ResnetDownsampleBlock2D' if flags.resblock_updown else 'DownBlock2D'
    plain_up = 'ResnetUpsampleBlock2D' if flags.resblock_updown else 'UpBlock2D'
    resample = 'resnet' if flags.resblock_updown else 'conv'
    return dict(
        sample_size=flags.image_size,
        in_channels=3,
        out_channels=6 if flags.learn_sigma else 3,
        center_input_sample=False,
        time_embedding_type='positional',
        flip_sin_to_cos=True,  # [cos, sin]
        freq_shift=0,  # frequencies exp(-ln(10000) * i / half)
        down_block_types=tuple('AttnDownBlock2D' if a else plain_down for a in with_attention),
        mid_block_type='UNetMidBlock2D',
        up_block_types=tuple('AttnUpBlock2D' if a else plain_up for a in reversed(with_attention)),
        block_out_channels=channels,
        layers_per_block=flags.num_res_blocks,
        mid_block_scale_factor=1,
        downsample_padding=1,
        downsample_type=resample,
        upsample_type=resample,
        dropout=flags.dropout,
        act_fn='silu',
        attention_head_dim=_attention_head_dim(flags, channels, sorted(levels)),
        norm_num_groups=GROUPS,
        attn_norm_num_groups=GROUPS,  # keep the middle attention's GroupNorm (see module doc)
        norm_eps=1e-5,
        resnet_time_scale_shift='scale_shift' if flags.use_scale_shift_norm else 'default',
        add_attention=True,
        class_embed_type=None,
        num_class_embeds=NUM_CLASSES if flags.class_cond else None,
    )


def module_pairs(flags):
    """Every guided-diffusion module with parameters and the UNet2DModel module it maps to.

    Walks guided-diffusion's block numbering: ``input_blocks`` counts the stem conv, each ResBlock
    (+ attention) and each downsampler; ``output_blocks`` counts ``num_res_blocks + 1`` blocks per
    level, the last of which carries the upsampler.
    """
    flags = _parse_flags(flags)
    channels = level_channels(flags)
    levels = attention_levels(flags, len(channels))
    last = len(channels) - 1
    pairs = [ModulePair('time_embed.0', 'time_embedding.linear_1'),
             ModulePair('time_embed.2', 'time_embedding.linear_2'),
             ModulePair('input_blocks.0.0', 'conv_in')]
    if flags.class_cond:
        pairs.append(ModulePair('label_emb', 'class_embedding'))

    block = 1
    for level, width in enumerate(channels):
        for j in range(flags.num_res_blocks):
            pairs.append(ModulePair(f'input_blocks.{block}.0', f'down_blocks.{level}.resnets.{j}',
                                    'resblock'))
            if level in levels:
                pairs.append(ModulePair(f'input_blocks.{block}.1',
                                        f'down_blocks.{level}.attentions.{j}', 'attention',
                                        attention_heads(flags, width)))
            block += 1
        if level != last:
            target = f'down_blocks.{level}.downsamplers.0'
            pairs.append(ModulePair(f'input_blocks.{block}.0', target, 'resblock')
                         if flags.resblock_updown else
                         ModulePair(f'input_blocks.{block}.0.op', f'{target}.conv'))
            block += 1

    pairs += [ModulePair('middle_block.0', 'mid_block.resnets.0', 'resblock'),
              ModulePair('middle_block.1', 'mid_block.attentions.0', 'attention',
                         attention_heads(flags, channels[-1])),
              ModulePair('middle_block.2', 'mid_block.resnets.1', 'resblock')]

    block = 0
    for up, level in enumerate(reversed(range(len(channels)))):
        for j in range(flags.num_res_blocks + 1):
            pairs.append(ModulePair(f'output_blocks.{block}.0', f'up_blocks.{up}.resnets.{j}',
                                    'resblock'))
            index = 1
            if level in levels:
                pairs.append(ModulePair(f'output_blocks.{block}.1',
                                        f'up_blocks.{up}.attentions.{j}', 'attention',
                                        attention_heads(flags, channels[level], upsampling=True)))
                index = 2
            if level and j == flags.num_res_blocks:
                target = f'up_blocks.{up}.upsamplers.0'
                pairs.append(ModulePair(f'output_blocks.{block}.{index}', target, 'resblock')
                             if flags.resblock_updown else
                             ModulePair(f'output_blocks.{block}.{index}.conv', f'{target}.conv'))
            block += 1

    pairs += [ModulePair('out.0', 'conv_norm_out'), ModulePair('out.2', 'conv_out')]
    return pairs


# --------------------------------------------------------------------------- weights

def split_qkv(tensor, heads, new_order):
    """Split a ``qkv`` conv1d weight ``(3C, C, 1)`` or bias ``(3C,)`` into q, k, v.

    Legacy order lays the output channels out as ``[head][q|k|v][ch]``, the new order as
    ``[q|k|v][head][ch]``; diffusers' ``to_q/to_k/to_v`` each want ``[head][ch]``.
    """
    rest = tensor.shape[1:2]  # conv1d kernel dim dropped: (3C, C, 1) -> (3C, C)
    tensor = tensor.reshape(tensor.shape[0], *rest)
    width = tensor.shape[0] // 3
    if new_order:
        parts = tensor.reshape(3, width, *rest)
    else:
        parts = tensor.reshape(heads, 3, width // heads, *rest).transpose(0, 1)
        parts = parts.reshape(3, width, *rest)
    return parts[0], parts[1], parts[2]


def _source_name(pair, target_module):
    if pair.kind == 'resblock':
        return RESBLOCK_NAMES[target_module]
    if pair.kind == 'attention':
        return ATTENTION_NAMES[target_module]
    return target_module


def _expected_source_shape(pair, target_module, target_shape):
    """The checkpoint shape that maps onto ``target_shape`` (attention linears were conv1d)."""
    if pair.kind != 'attention' or target_module == 'group_norm':
        return tuple(target_shape)
    rows = target_shape[0] * (3 if target_module in QKV_INDEX else 1)
    return (rows, target_shape[1], 1) if len(target_shape) == 2 else (rows,)


def _take(pair, target_module, tensor, new_order):
    if pair.kind == 'attention' and target_module in QKV_INDEX:
        return split_qkv(tensor, pair.heads, new_order)[QKV_INDEX[target_module]]
    if pair.kind == 'attention' and tensor.dim() == 3:
        return tensor[..., 0]  # conv1d (C, C, 1) -> linear (C, C)
    return tensor


def _strip_wrapper_prefix(state_dict):
    """Drop a ``module.`` prefix that DataParallel/DDP wrappers put on every key."""
    if state_dict and all(k.startswith('module.') for k in state_dict):
        return {k[len('module.'):]: v for k, v in state_dict.items()}
    return state_dict


def _check_state_dict(state_dict):
    if not isinstance(state_dict, dict) or not state_dict or not all(
            isinstance(k, str) and torch.is_tensor(v) for k, v in state_dict.items()):
        raise GuidedDiffusionConversionError(
            f'the checkpoint is not a state dict of tensors (got {type(state_dict).__name__}); '
            f'guided-diffusion checkpoints are the plain model.state_dict() saved with torch.save.')


def _examples(keys, n=4):
    keys = sorted(keys)
    shown = ', '.join(keys[:n])
    return shown + (f' and {len(keys) - n} more' if len(keys) > n else '')


def _key_mismatch_message(missing, unexpected):
    parts = []
    if missing:
        parts.append(f'{len(missing)} keys the flags need are missing ({_examples(missing)})')
    if unexpected:
        parts.append(f'{len(unexpected)} keys are unexpected ({_examples(unexpected)})')
    hints = []
    if 'label_emb.weight' in unexpected:
        hints.append('the checkpoint has a class embedding: try --class_cond True')
    if 'label_emb.weight' in missing:
        hints.append('the checkpoint has no class embedding: try --class_cond False')
    hint = f' Hint: {"; ".join(hints)}.' if hints else ''
    return (f'The checkpoint does not fit the flags: {" and ".join(parts)}. The flags probably '
            f'differ from the ones the model was trained with; the key layout depends on '
            f'{", ".join(LAYOUT_FLAGS)}.{hint}')


def _shape_mismatch_message(flags, mismatched):
    """``mismatched`` maps checkpoint keys to (checkpoint shape, shape the flags need)."""
    shown = '; '.join(f'{key} is {got} in the checkpoint but {want} for the flags'
                      for key, (got, want) in list(mismatched.items())[:3])
    more = f' (and {len(mismatched) - 3} more)' if len(mismatched) > 3 else ''
    hints = []
    if 'out.2.weight' in mismatched:
        hints.append(f'the output conv has {mismatched["out.2.weight"][0][0]} channels: 6 means '
                     f'--learn_sigma True, 3 means --learn_sigma False')
    if all('emb_layers.1' in key for key in mismatched):
        hints.append(f'only the time-embedding projections differ: try --use_scale_shift_norm '
                     f'{not flags.use_scale_shift_norm}')
    hint = f' Hint: {"; ".join(hints)}.' if hints else ''
    return (f'The checkpoint does not fit the flags: {shown}{more}. The flags probably differ '
            f'from the ones the model was trained with; tensor shapes depend on '
            f'{", ".join(SHAPE_FLAGS)}.{hint}')


def convert_state_dict(state_dict, flags, target_shapes):
    """Map a guided-diffusion state dict onto UNet2DModel keys.

    ``target_shapes`` is ``{key: shape}`` of the UNet2DModel built from the same flags.
    Raises :class:`GuidedDiffusionConversionError` naming the missing, unexpected or misshapen keys.
    """
    flags = _parse_flags(flags)
    converted, covered, used, missing, mismatched = {}, set(), set(), {}, {}
    for pair in module_pairs(flags):
        prefix = pair.target + '.'
        for target_key in [k for k in target_shapes if k.startswith(prefix)]:
            covered.add(target_key)
            target_module, _, param = target_key[len(prefix):].rpartition('.')
            source_key = '.'.join(
                p for p in (pair.source, _source_name(pair, target_module), param) if p)
            if source_key not in state_dict:
                missing[source_key] = None
                continue
            used.add(source_key)
            tensor = state_dict[source_key]
            want = _expected_source_shape(pair, target_module, target_shapes[target_key])
            if tuple(tensor.shape) != want:
                mismatched[source_key] = (tuple(tensor.shape), want)
                continue
            converted[target_key] = _take(pair, target_module, tensor,
                                          flags.use_new_attention_order)
    uncovered = set(target_shapes) - covered
    if uncovered:  # the plan and the diffusers config disagree: a bug here, not in the input
        raise RuntimeError(
            f'no guided-diffusion source for UNet2DModel keys {_examples(uncovered)}')
    unexpected = set(state_dict) - used
    if missing or unexpected:
        raise GuidedDiffusionConversionError(_key_mismatch_message(missing, unexpected))
    if mismatched:
        raise GuidedDiffusionConversionError(_shape_mismatch_message(flags, mismatched))
    return converted


def convert_guided_diffusion(state_dict, flags=None, **kwargs):
    """Build the ``UNet2DModel`` that computes what the guided-diffusion checkpoint computes.

    Args:
        state_dict: the guided-diffusion model's ``state_dict()`` (a ``module.`` prefix is dropped).
        flags: a :class:`GuidedDiffusionFlags`, or its fields as keyword arguments.

    Raises:
        GuidedDiffusionConversionError: keys or shapes that do not fit the flags, or flags that
            describe a model UNet2DModel cannot express.
    """
    from diffusers import UNet2DModel

    flags = _parse_flags(flags if flags is not None else kwargs)
    _check_state_dict(state_dict)
    state_dict = _strip_wrapper_prefix(state_dict)
    unet = UNet2DModel(**unet2d_config_from_flags(flags))
    target_shapes = {k: v.shape for k, v in unet.state_dict().items()}
    unet.load_state_dict(convert_state_dict(state_dict, flags, target_shapes), strict=True)
    return unet.eval()


# --------------------------------------------------------------------------- scheduler

def ddpm_scheduler_from_flags(diffusion_steps=1000, noise_schedule='linear', learn_sigma=False,
                              predict_xstart=False, sigma_small=False):
    """The diffusers ``DDPMScheduler`` of guided-diffusion's Gaussian diffusion with these flags.

    ``linear``: betas from 1e-4 to 0.02, both scaled by ``1000 / diffusion_steps``; ``cosine``: the
    improved-DDPM schedule (diffusers' ``squaredcos_cap_v2``, capped at 0.999).
    """
    from diffusers import DDPMScheduler

    if diffusion_steps < 1:
        raise GuidedDiffusionConversionError(
            f'--diffusion_steps must be positive, got {diffusion_steps}.')
    if noise_schedule == 'linear':
        scale = 1000 / diffusion_steps
        betas = dict(beta_schedule='linear', beta_start=scale * 0.0001, beta_end=scale * 0.02)
    elif noise_schedule == 'cosine':
        betas = dict(beta_schedule='squaredcos_cap_v2')
    else:
        raise GuidedDiffusionConversionError(
            f"--noise_schedule {noise_schedule!r} is not one of guided-diffusion's schedules "
            f"('linear', 'cosine').")
    if learn_sigma:
        variance = 'learned_range'
    else:
        variance = 'fixed_small' if sigma_small else 'fixed_large'
    return DDPMScheduler(num_train_timesteps=diffusion_steps, variance_type=variance,
                         prediction_type='sample' if predict_xstart else 'epsilon',
                         clip_sample=True, clip_sample_range=1.0, **betas)


# --------------------------------------------------------------------------- output

def save_pipeline_atomically(unet, scheduler, out_dir, overwrite=False):
    """Write ``out_dir`` as a ``DDPMPipeline`` folder (``unet/``, ``scheduler/``,
    ``model_index.json``), all or nothing (``common.io.atomic_folder``): a failure never leaves a
    half-written folder and an existing one is replaced (``overwrite``) only once the new one is
    complete.
    """
    from diffusers import DDPMPipeline

    check_output_folder(out_dir, overwrite)
    return save_pretrained_atomically(DDPMPipeline(unet=unet, scheduler=scheduler), out_dir,
                                      overwrite=overwrite)


def check_output_folder(out_dir, overwrite=False):
    """Refuse to replace an existing ``out_dir`` unless ``overwrite`` (call it before the work)."""
    if os.path.isfile(out_dir):
        raise GuidedDiffusionConversionError(
            f'the output {out_dir!r} is a file; give a folder path for the diffusers pipeline.')
    if os.path.isdir(out_dir) and not overwrite:
        raise GuidedDiffusionConversionError(
            f'the output folder {out_dir!r} already exists; choose another path or pass '
            f'--overwrite to replace it.')
