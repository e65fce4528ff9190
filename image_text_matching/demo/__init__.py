"""The offline image-text matching demo (``make demo-itm``, ``tools/demo_itm.py``).

No pretrained Stable Diffusion is reachable offline, so the demo trains its own small one: a
text-conditioned pixel UNet on captioned handwritten digits, with a word-level tokenizer built
from the captions. The one rule: nothing here is needed to score real images with a real
pipeline; these parts only make a model and data that the subtree's scorer, LoRA prompt learning
and metric can run on without downloads.
"""
from .captioned_digits import (DEFAULT_TEMPLATE, DIGIT_WORDS, HARD_NEGATIVES,
                               CaptionedDigitsDataset, DigitsITMDataset, digit_captions,
                               few_shot_count, nearest_mean_digit)
from .pipeline import PixelTextPipeline
from .text_ddpm_trainer import TextDDPMTrainer
from .tokenizer import build_word_tokenizer, caption_words, text_encoder_ids

__all__ = [
    'DEFAULT_TEMPLATE', 'DIGIT_WORDS', 'HARD_NEGATIVES', 'CaptionedDigitsDataset',
    'DigitsITMDataset', 'PixelTextPipeline', 'TextDDPMTrainer', 'build_word_tokenizer',
    'caption_words', 'digit_captions', 'few_shot_count', 'nearest_mean_digit', 'text_encoder_ids'
]
