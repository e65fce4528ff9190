"""Moved to :mod:`common.engine.export_pipeline_hook` (two subtrees use the digits teacher);
this re-export keeps ``classification_distill.engine.export_pipeline_hook`` imports and configs
working."""
from common.engine.export_pipeline_hook import (ExportDiffusersPipelineHook, sample_grid,
                                                save_pipeline_atomically)

__all__ = ['ExportDiffusersPipelineHook', 'sample_grid', 'save_pipeline_atomically']
