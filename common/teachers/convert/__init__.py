"""Converters from original diffusion checkpoints to diffusers models a teacher can load."""
from .guided_diffusion import (GuidedDiffusionConversionError, GuidedDiffusionFlags,
                               check_output_folder, convert_guided_diffusion,
                               ddpm_scheduler_from_flags, save_pipeline_atomically,
                               unet2d_config_from_flags)

__all__ = [
    'GuidedDiffusionConversionError', 'GuidedDiffusionFlags', 'check_output_folder',
    'convert_guided_diffusion', 'ddpm_scheduler_from_flags', 'save_pipeline_atomically',
    'unet2d_config_from_flags'
]
