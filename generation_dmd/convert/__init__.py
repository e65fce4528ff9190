"""Converters that turn other projects' released diffusion checkpoints into safe files.

The one rule: nothing here runs code from the file it reads; a pickle is read by a restricted
unpickler (see :mod:`generation_dmd.convert.edm_pickle`), and outputs are safetensors + JSON
written atomically.
"""
from .edm_pickle import (ALLOWED_GLOBALS, EDMPickleError, PersistentRecord, TorchModuleRecord,
                         convert_edm_pickle, flat_state_dict, network_config, read_edm_pickle,
                         select_network)

__all__ = [
    'ALLOWED_GLOBALS', 'EDMPickleError', 'PersistentRecord', 'TorchModuleRecord',
    'convert_edm_pickle', 'flat_state_dict', 'network_config', 'read_edm_pickle',
    'select_network'
]
