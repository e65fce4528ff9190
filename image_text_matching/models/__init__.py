"""Models of the image-text matching subtree: the diffusion scorers (DSD attention score,
Diffusion-ITM, their sum), the cross-attention capture they read, and the timestep grid and
common random noise they share; LoRA prompt learning (``add_lora`` / ``save_lora`` / ``load_lora``), its
losses and the mmengine model ``DSDMatcher``. Importing it registers ``DSDScorer``, ``DSDMatcher``
and the losses in mmengine's MODELS."""
from .attention_capture import (CrossAttentionCapture, cross_attention_layers, default_layers,
                                resolve_layers)
from .lora import (LORA_WEIGHT_NAME, TARGET_PRESETS, LoRAError, add_lora, load_lora,
                   lora_target_names, save_lora)
from .losses import CandidateCELoss, HardNegativeITMLoss, MarginRankingLoss
from .matcher import DSDMatcher
from .scorer import DSDScorer
from .timesteps import latent_noise, shared_noise, timestep_grid

__all__ = [
    'CrossAttentionCapture', 'cross_attention_layers', 'default_layers', 'resolve_layers',
    'DSDScorer', 'latent_noise', 'shared_noise', 'timestep_grid', 'LORA_WEIGHT_NAME',
    'TARGET_PRESETS', 'LoRAError', 'add_lora', 'load_lora', 'lora_target_names', 'save_lora',
    'CandidateCELoss', 'HardNegativeITMLoss', 'MarginRankingLoss', 'DSDMatcher',
]
