from .export_pipeline_hook import ExportDiffusersPipelineHook

__all__ = ['ExportDiffusersPipelineHook']
