"""Score image generators on digits for the DMD demo: a proxy Fréchet distance, the recognised
rate and images per second, every source measured the same way in one process.

The one rule: the number computed here is a PROXY and is always called by :data:`PROXY_NAME`
("proxy Fréchet distance in digits classifier features (not FID)"): the features are the
penultimate layer of the demo's own digits classifier (:mod:`.digits_classifier`, not
Inception), the reference is the digits TEST split (600 held-out images, never seen by the
teacher or the classifier), and a few hundred generated images are scored. It ranks generators of
the same digits against each other; it is not comparable with any published FID.

Images are scored as they would be saved: quantised to uint8 by EDM's
``(x * 127.5 + 128).clip(0, 255)`` (``generation_dmd.generator.to_uint8``), then fed to
``generation_dmd.evaluation.ClassifierFeatureExtractor``; statistics and the distance are
``FeatureStatistics`` / ``frechet_distance`` (float64).
"""
import time

import numpy as np
import torch

from ..evaluation import ClassifierFeatureExtractor, FeatureStatistics, frechet_distance
from ..generator import to_uint8
from .digits_classifier import RECOGNISED_THRESHOLD, digits_tensors, recognised

PROXY_NAME = 'proxy Fréchet distance in digits classifier features (not FID)'
PROXY_KEY = 'proxy_FD_digits_classifier'
REFERENCE = 'digits test split (600 held-out images, 8x8 upsampled bilinearly)'
FEATURE_LAYER = 'body'  # DigitsCNN.body ends with the penultimate ReLU


class DigitsJudge:
    """Scores uint8 digit images against the digits test split with one trained classifier.

    ``judge.score(images_uint8)`` returns ``{PROXY_KEY: float, 'recognised_pct': float,
    'predicted_classes': [10 counts]}``. The reference statistics (the test split through the
    same extractor) are computed once, at construction.
    """

    def __init__(self, classifier, batch_size=256):
        self.classifier = classifier.eval()
        self.image_size = classifier.config['image_size']
        self.extractor = ClassifierFeatureExtractor(
            classifier, feature_layer=FEATURE_LAYER, logits=True, batch_size=batch_size,
            device='cpu', name='digits-classifier:DigitsCNN:penultimate')
        images, _ = digits_tensors('test', self.image_size)
        out = self.extractor(to_uint8(images))
        self.reference = FeatureStatistics().update(out['features']).mean_cov()
        self.reference_recognised = float(recognised(out['logits']).float().mean()) * 100

    def score(self, images):
        if images.dtype != torch.uint8:
            images = to_uint8(images)
        out = self.extractor(images.cpu())
        mu, sigma = FeatureStatistics().update(out['features']).mean_cov()
        logits = out['logits']
        return {
            PROXY_KEY: frechet_distance(mu, sigma, *self.reference),
            'recognised_pct': 100.0 * float(recognised(logits).float().mean()),
            'predicted_classes': np.bincount(logits.argmax(-1).numpy(),
                                             minlength=logits.shape[1]).tolist(),
        }


def timed_generate(sample, seeds, batch_size, latents):
    """``(images float (N, C, H, W) in [-1, 1] on the CPU, images per second)``: ``sample(z)``
    on the noise ``latents(seeds_chunk)`` of ``batch_size`` seeds at a time, under
    ``torch.no_grad``. The clock covers ``sample`` only (not drawing the noise, not scoring)."""
    out, seconds = [], 0.0
    with torch.no_grad():
        for start in range(0, len(seeds), batch_size):
            z = latents(seeds[start:start + batch_size])
            begin = time.perf_counter()
            images = sample(z)
            seconds += time.perf_counter() - begin
            out.append(images.float().clamp(-1, 1).cpu())
    return torch.cat(out), len(seeds) / max(seconds, 1e-9)


def grid_png(images, path, columns=10, scale=2):
    """Write images (float in [-1, 1] or uint8, (N, C, H, W)) as a PNG grid, atomically."""
    from PIL import Image

    from common.io import atomic_path
    if images.dtype != torch.uint8:
        images = to_uint8(images)
    n, c, h, w = images.shape
    rows = -(-n // columns)
    grid = torch.zeros((c, rows * h, columns * w), dtype=torch.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[:, r * h:(r + 1) * h, col * w:(col + 1) * w] = image
    array = grid.permute(1, 2, 0).numpy()
    if c == 1:
        array = array[..., 0]
    array = array.repeat(scale, axis=0).repeat(scale, axis=1)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format='PNG')
    return path


__all__ = ['PROXY_NAME', 'PROXY_KEY', 'REFERENCE', 'RECOGNISED_THRESHOLD', 'DigitsJudge',
           'timed_generate', 'grid_png']
