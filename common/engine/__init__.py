"""Runner hooks shared by every subtree (registered in mmengine's root ``HOOKS``)."""
from .export_pipeline_hook import ExportDiffusersPipelineHook
from .rng_state_hook import RNGStateHook

__all__ = ['ExportDiffusersPipelineHook', 'RNGStateHook']
