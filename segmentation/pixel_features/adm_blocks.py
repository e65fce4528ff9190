"""guided-diffusion ``output_blocks[i]`` → the module of the converted diffusers ``UNet2DModel``.

ddpm-segmentation names its features by the index of guided-diffusion's decoder blocks
(``output_blocks`` 5, 6, 7, 8, 12 of the 256-px ADM). Our teachers are the diffusers
``UNet2DModel`` that ``tools/convert/guided_diffusion_to_diffusers.py`` writes, addressed by module
path; this module translates one into the other.

The one rule: the output of ``output_blocks[i]`` is the output of its LAST layer (its upsampler
when it has one, else its attention, else its ResBlock), so the diffusers path is that layer's
(``up_blocks.1.upsamplers.0``, ``up_blocks.2.attentions.0``, ``up_blocks.4.resnets.0``). The
mapping comes from the converter's own ``module_pairs`` when given flags, and from the
UNet2DModel config's block layout otherwise; the tests check both against each other and against
an independent guided-diffusion implementation.
"""
from common.teachers.convert.guided_diffusion import (GuidedDiffusionFlags, module_pairs)

#: ddpm-segmentation's default feature blocks and timesteps (README update of 3/9/2022) ...
DEFAULT_BLOCKS = (5, 6, 7, 8, 12)
DEFAULT_STEPS = (50, 150, 250)
#: ... and the paper's original setting.
PAPER_BLOCKS = (6, 7, 8, 9)
PAPER_STEPS = (50, 150, 250, 350)


class AdmBlockError(ValueError):
    """An ``output_blocks`` index or a model description this module cannot map."""


def _flag_names():
    return set(GuidedDiffusionFlags.__dataclass_fields__)


def _is_unet_config(description):
    return 'up_block_types' in description and 'layers_per_block' in description


def _as_description(flags_or_unet_config):
    """``('flags', GuidedDiffusionFlags)`` or ``('config', dict)``."""
    value = flags_or_unet_config
    if isinstance(value, GuidedDiffusionFlags):
        return 'flags', value
    if hasattr(value, 'config') and hasattr(value, 'up_blocks'):  # a UNet2DModel instance
        value = value.config
    if hasattr(value, 'items'):
        value = dict(value.items())
        if _is_unet_config(value):
            return 'config', value
        unknown = sorted(set(value) - _flag_names())
        if not unknown:
            return 'flags', GuidedDiffusionFlags(**value)
        raise AdmBlockError(
            f'adm_output_block_path: the description has keys {unknown} that are neither '
            f'guided-diffusion flags ({sorted(_flag_names())}) nor a UNet2DModel config (which '
            f'has up_block_types and layers_per_block). Pass the model\'s flags (a dict or a '
            f'GuidedDiffusionFlags) or its converted UNet2DModel config (unet.config).')
    raise AdmBlockError(
        f'adm_output_block_path: expected guided-diffusion flags (a dict or GuidedDiffusionFlags)'
        f', a UNet2DModel config or a UNet2DModel, got a {type(value).__name__}.')


def _layout(config):
    """``(layers_per_block, up_block_types, block_out_channels)`` of a UNet2DModel config."""
    return (int(config['layers_per_block']), tuple(config['up_block_types']),
            tuple(config['block_out_channels']))


def num_output_blocks(flags_or_unet_config):
    """How many ``output_blocks`` guided-diffusion has (levels x (num_res_blocks + 1))."""
    kind, value = _as_description(flags_or_unet_config)
    if kind == 'flags':
        return sum(1 for p in module_pairs(value)
                   if p.source.startswith('output_blocks.') and p.source.endswith('.0')
                   and p.source.count('.') == 2)
    per, types, _ = _layout(value)
    return len(types) * (per + 1)


def _check_index(index, total):
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < total:
        raise AdmBlockError(
            f'output_blocks index {index!r} is out of range: this model has {total} output '
            f'blocks (0..{total - 1}; 0 is the deepest, {total - 1} the last full-resolution '
            f'one). ddpm-segmentation uses {list(DEFAULT_BLOCKS)} on the 256-px ADM; choose '
            f'indices of this model.')


def adm_output_block_path(flags_or_unet_config, index):
    """The UNet2DModel module path whose output is guided-diffusion's ``output_blocks[index]``.

    Args:
        flags_or_unet_config: the guided-diffusion flags (dict or ``GuidedDiffusionFlags``), or
            the converted ``UNet2DModel``'s config (``unet.config``) or the model itself.
        index (int): the ``output_blocks`` index.
    """
    kind, value = _as_description(flags_or_unet_config)
    _check_index(index, num_output_blocks(value))
    if kind == 'flags':
        prefix = f'output_blocks.{index}.'
        last = [p for p in module_pairs(value) if p.source.startswith(prefix)][-1]
        # a conv upsampler maps as 'output_blocks.i.k.conv' -> 'up_blocks.u.upsamplers.0.conv';
        # the block's output is its Upsample's output, i.e. the upsampler module itself
        depth = last.source.count('.') - prefix.count('.')
        return last.target.rsplit('.', depth)[0] if depth else last.target
    per, types, _ = _layout(value)
    up, j = divmod(index, per + 1)
    if j == per and up < len(types) - 1:
        return f'up_blocks.{up}.upsamplers.0'
    if types[up].startswith('Attn'):
        return f'up_blocks.{up}.attentions.{j}'
    return f'up_blocks.{up}.resnets.{j}'


def adm_output_block_shape(flags_or_unet_config, index, image_size=None):
    """``(channels, height)`` of ``output_blocks[index]``'s output for a square input of
    ``image_size`` pixels (default: the model's own size); width equals height."""
    kind, value = _as_description(flags_or_unet_config)
    if kind == 'flags':
        from common.teachers.convert.guided_diffusion import unet2d_config_from_flags
        value = unet2d_config_from_flags(value)
    _check_index(index, num_output_blocks(value))
    per, types, channels = _layout(value)
    size = int(image_size if image_size is not None else value['sample_size'])
    up, j = divmod(index, per + 1)
    level = len(types) - 1 - up  # level 0 runs at full resolution
    side = size // 2 ** level
    if j == per and up < len(types) - 1:
        side *= 2
    return int(channels[level]), int(side)


def adm_feature_dim(flags_or_unet_config, blocks=DEFAULT_BLOCKS, steps=DEFAULT_STEPS):
    """Channels of the concatenated pixel feature: sum over ``blocks`` x ``len(steps)``."""
    return len(steps) * sum(adm_output_block_shape(flags_or_unet_config, b)[0] for b in blocks)
