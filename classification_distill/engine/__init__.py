from .export_pipeline_hook import ExportDiffusersPipelineHook  # re-export: common.engine

__all__ = ['ExportDiffusersPipelineHook']
