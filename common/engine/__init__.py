"""Runner hooks shared by every subtree (registered in mmengine's root ``HOOKS``)."""
from .rng_state_hook import RNGStateHook

__all__ = ['RNGStateHook']
