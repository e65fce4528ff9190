"""A small digits classifier for the DMD demo: judges generated digits, offline, in seconds.

The demo has no Inception weights (no network), so it trains this CNN on the digits' train split
(``common.datasets.digits``: 1,197 images, 32 x 32, grey repeated over 3 channels) and uses it
twice: its penultimate features for a *proxy* Fréchet distance (not FID: another feature
extractor, another reference set, a few hundred images), and its confidence for the
"recognised" rate. A classifier trained on digits alone is confidently wrong on what is not a
digit (it called 25% of an epsilon teacher's saturated noise "recognised"), so each training step
also shows it synthetic non-digits (noise, colour blobs, flat colours, averages of 3-8 digits)
with a uniform target (outlier exposure): on the real test digits it keeps 99% accuracy and
recognises about 93%; it recognises almost none of the non-digits.

The one rule (the recognition rule): a generated image is *recognised* when the classifier's
largest softmax probability is at least ``RECOGNISED_THRESHOLD`` = 0.9, whatever the class; the
recognised rate of a set of images is the percentage of such images. Images enter the network as
floats in [-1, 1] (B, 3, 32, 32), the range the generators produce (uint8 0..255 is accepted and
mapped there).
"""
import json
import os
import os.path as osp
import time

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import nn

RECOGNISED_THRESHOLD = 0.9
CONFIG_FILE = 'config.json'
WEIGHTS_FILE = 'model.safetensors'
FORMAT = 'digits_cnn'


class DigitsClassifierError(ValueError):
    """A classifier folder is missing or inconsistent, or an input has the wrong shape."""


@MODELS.register_module()
class DigitsCNN(nn.Module):
    """Three conv-ReLU-maxpool stages (32 -> 16 -> 8 -> 4 pixels), a ``feature_dim`` penultimate
    layer (ReLU) and a linear head over ``num_classes`` digits.

    ``features(x)`` returns the penultimate activations (B, feature_dim), ``forward(x)`` the
    logits (B, num_classes); ``x`` is (B, 3, image_size, image_size), float in [-1, 1] or uint8.
    """

    def __init__(self, width=16, feature_dim=64, num_classes=10, image_size=32, in_channels=3):
        super().__init__()
        if int(image_size) % 8 or int(image_size) < 8:
            raise DigitsClassifierError(
                f'DigitsCNN: image_size={image_size} must be a multiple of 8 (three 2x poolings); '
                f'the demo uses 32.')
        self.config = dict(width=int(width), feature_dim=int(feature_dim),
                           num_classes=int(num_classes), image_size=int(image_size),
                           in_channels=int(in_channels))
        w = int(width)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(4 * w * (int(image_size) // 8) ** 2, int(feature_dim)), nn.ReLU())
        self.head = nn.Linear(int(feature_dim), int(num_classes))

    def _prepare(self, x):
        c, s = self.config['in_channels'], self.config['image_size']
        if not torch.is_tensor(x) or x.dim() != 4 or tuple(x.shape[1:]) != (c, s, s):
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise DigitsClassifierError(
                f'DigitsCNN: images of shape {shape}; expected (batch, {c}, {s}, {s}) floats in '
                f'[-1, 1] or uint8. Resize or convert the images (the digits demo generates '
                f'3 x 32 x 32).')
        if x.dtype == torch.uint8:
            x = x.to(torch.float32) / 127.5 - 1
        return x.to(next(self.parameters()).dtype)

    def features(self, x):
        """Penultimate activations (B, feature_dim): the proxy's feature space."""
        return self.body(self._prepare(x))

    def forward(self, x):
        return self.head(self.features(x))


def recognised(logits, threshold=RECOGNISED_THRESHOLD):
    """Bool (B,): the classifier's top softmax probability is ``>= threshold`` (module doc)."""
    if not 0 < float(threshold) <= 1:
        raise DigitsClassifierError(f'recognised: threshold={threshold} must be in (0, 1] '
                                    f'(the demo uses {RECOGNISED_THRESHOLD}).')
    return logits.float().softmax(-1).amax(-1) >= float(threshold)


def digits_tensors(split, image_size):
    """(images float (N, 3, S, S) in [-1, 1], labels long (N,)) of one digits split."""
    from common.datasets.digits import _load_digits, digits_split_indices, upsample_digits
    images, labels = _load_digits()
    index = digits_split_indices(labels, split)
    pixels = torch.from_numpy(upsample_digits(images[index], image_size)).permute(0, 3, 1, 2)
    return pixels.to(torch.float32) / 127.5 - 1, torch.from_numpy(labels[index]).long()


def _shift(images, max_shift, generator):
    """Each image translated by its own random integer offset in [-max_shift, max_shift]
    (zero-padded with the background value -1)."""
    if max_shift <= 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift, ) * 4, value=-1.0)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def synthetic_outliers(n, channels, size, generator, digits=None):
    """``n`` images that are no single digit (float in [-1, 1]), mixed per image: white colour
    noise, smooth colour blobs (noise drawn at 4 x 4 or 8 x 8 and upsampled), saturated noise,
    flat colours and, when ``digits`` (N, C, H, W) are given, the average of 3 to 8 random
    digits (a blurred superposition: what a generator that regresses to the mean draws). The
    classifier learns a uniform answer on them (outlier exposure), so that its confidence means
    "looks like one digit" on generated images too."""
    kinds = 5 if digits is not None else 4
    kind = torch.randint(0, kinds, (n, ), generator=generator)
    white = torch.rand((n, channels, size, size), generator=generator) * 2 - 1
    coarse = torch.rand((n, channels, 8, 8), generator=generator) * 2 - 1
    low = F.interpolate(coarse, size=(size, size), mode='bilinear', align_corners=False)
    coarser = F.interpolate(coarse[..., ::2, ::2], size=(size, size), mode='bilinear',
                            align_corners=False)
    smooth = torch.where((torch.arange(n) % 2 == 0).view(-1, 1, 1, 1), low, coarser)
    saturated = torch.sign(white)
    flat = (torch.rand((n, channels, 1, 1), generator=generator) * 2 - 1).expand_as(white)
    options = [white, smooth, saturated, flat]
    if digits is not None:
        count = torch.randint(3, 9, (n, ), generator=generator)
        pick = torch.randint(0, len(digits), (n, 8), generator=generator)
        mask = (torch.arange(8)[None] < count[:, None]).float()  # (n, 8): the first k picks
        mixed = (digits[pick] * mask[..., None, None, None]).sum(1) / count.view(-1, 1, 1, 1)
        options.append(mixed)
    return torch.stack(options)[kind, torch.arange(n)].contiguous()


@torch.no_grad()
def evaluate_classifier(model, images, labels, batch_size=256):
    """(top-1 accuracy %, recognised %) of ``model`` on ``images`` with ``labels``."""
    model.eval()
    logits = torch.cat([model(images[i:i + batch_size])
                        for i in range(0, len(images), batch_size)])
    accuracy = 100.0 * float((logits.argmax(-1) == labels).float().mean())
    return accuracy, 100.0 * float(recognised(logits).float().mean())


def train_digits_classifier(epochs=30, batch_size=64, lr=2e-3, weight_decay=1e-4, max_shift=2,
                            outlier_weight=0.5, seed=0, image_size=32, log=None, **model_kwargs):
    """Train a :class:`DigitsCNN` on the digits train split; returns ``(model, info)``.

    Each step also shows ``batch_size // 2`` :func:`synthetic_outliers` with a uniform target
    (cross-entropy to the uniform distribution, weight ``outlier_weight``; 0 turns it off).
    ``info``: test-split top-1 accuracy and recognised rate (%), the recognised rate of fresh
    outliers, train seconds, epochs, seed. Seeded (``seed``) end to end.
    """
    torch.manual_seed(int(seed))
    generator = torch.Generator().manual_seed(int(seed))
    model = DigitsCNN(image_size=image_size, **model_kwargs)
    images, labels = digits_tensors('train', image_size)
    test_images, test_labels = digits_tensors('test', image_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = int(epochs) * ((len(images) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps,
                                                   pct_start=0.15)
    start = time.perf_counter()
    for epoch in range(int(epochs)):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        totals = [0.0, 0.0]  # digits cross-entropy, outliers' cross-entropy to uniform
        for i in range(0, len(images), batch_size):
            batch = order[i:i + batch_size]
            digits_loss = F.cross_entropy(model(_shift(images[batch], max_shift, generator)),
                                          labels[batch])
            loss = digits_loss
            if outlier_weight:
                odd = synthetic_outliers(len(batch) // 2, images.shape[1], image_size, generator,
                                         images)
                outliers_loss = -model(odd).log_softmax(-1).mean()
                loss = digits_loss + outlier_weight * outliers_loss
                totals[1] += float(outliers_loss.detach()) * len(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            totals[0] += float(digits_loss.detach()) * len(batch)
        if log is not None and (epoch + 1) % 10 == 0:
            log(f'classifier epoch {epoch + 1}/{epochs}: digits loss '
                f'{totals[0] / len(images):.4f}, outliers loss {totals[1] / len(images):.4f} '
                f'(uniform answer: ln 10 = 2.3026)')
    seconds = time.perf_counter() - start
    accuracy, rate = evaluate_classifier(model, test_images, test_labels)
    model.eval().requires_grad_(False)
    with torch.no_grad():
        odd = synthetic_outliers(500, images.shape[1], image_size,
                                 torch.Generator().manual_seed(int(seed) + 1), test_images)
        outlier_rate = 100.0 * float(recognised(model(odd)).float().mean())
    info = dict(test_accuracy=round(accuracy, 2), test_recognised=round(rate, 2),
                outliers_recognised=round(outlier_rate, 2), outlier_weight=outlier_weight,
                test_images=len(test_images), train_seconds=round(seconds, 1),
                epochs=int(epochs), seed=int(seed), recognised_threshold=RECOGNISED_THRESHOLD)
    return model, info


def save_digits_classifier(model, folder, info=None):
    """Write ``config.json`` + ``model.safetensors`` (atomically, replacing ``folder``)."""
    from safetensors.torch import save_file

    from common.io.atomic_folder import atomic_folder
    with atomic_folder(folder, overwrite=True) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, osp.join(tmp, WEIGHTS_FILE))
        with open(osp.join(tmp, CONFIG_FILE), 'w', encoding='utf-8') as f:
            json.dump(dict(format=FORMAT, model=model.config, info=info or {}), f, indent=2)
            f.write('\n')
    return folder


def load_digits_classifier(folder):
    """``(model, info)`` from a folder of :func:`save_digits_classifier` (eval, frozen)."""
    from safetensors.torch import load_file
    config_path, weights = osp.join(folder, CONFIG_FILE), osp.join(folder, WEIGHTS_FILE)
    if not (osp.isfile(config_path) and osp.isfile(weights)):
        raise DigitsClassifierError(
            f'{folder} is not a digits classifier folder: it needs {CONFIG_FILE} and '
            f'{WEIGHTS_FILE}. Train one with tools/demo_dmd.py (it writes '
            f'<work-dir>/classifier) or save_digits_classifier(model, folder).')
    with open(config_path, encoding='utf-8') as f:
        config = json.load(f)
    if not isinstance(config, dict) or config.get('format') != FORMAT:
        raise DigitsClassifierError(
            f'{config_path}: format={config.get("format") if isinstance(config, dict) else None!r}'
            f', expected {FORMAT!r}; the folder was not written by save_digits_classifier. '
            f'Delete it and let tools/demo_dmd.py train the classifier again.')
    model = DigitsCNN(**config['model'])
    model.load_state_dict(load_file(weights), strict=True)
    return model.eval().requires_grad_(False), config.get('info', {})


def classifier_is_saved(folder):
    return osp.isfile(osp.join(os.fspath(folder), CONFIG_FILE)) and \
        osp.isfile(osp.join(os.fspath(folder), WEIGHTS_FILE))
