"""Feature extractors for generation metrics: the protocol's Inception, or a local classifier.

Common interface (what ``GenerationMetric`` and ``tools/compute_fid_reference.py`` call)::

    out = extractor(images)   # images: torch.uint8 [N, C, H, W], values 0..255
    out['features']           # float32 (or float64) [N, D] on the CPU (FID statistics)
    out['logits']             # float32 (or float64) [N, K] on the CPU, or None (IS)
    extractor.name            # str, written into every result and statistics file
    extractor.standard        # True only for the FID/IS protocol's Inception network

The one rule: images enter as uint8, exactly as they would be saved to PNG (EDM quantises its
samples with ``(x * 127.5 + 128).clip(0, 255)`` before its detector sees them); each extractor
does its own resizing and normalisation, so every caller feeds the same thing.

* :class:`InceptionFeatureExtractor`: torch-fidelity's ``FeatureExtractorInceptionV3``
  ('inception-v3-compat': the TF-Inception graph of 2015-12-05 ported to PyTorch, the network of
  EDM's ``inception-2015-12-05.pkl`` detector), pool features '2048' and 'logits_unbiased' (the
  layers torch-fidelity uses for FID and IS). The weights come from a local file that we read
  with ``weights_only=True`` (torch-fidelity's own loader would unpickle it): nothing is
  downloaded. torch-fidelity is imported only when this extractor is built.
* :class:`ClassifierFeatureExtractor`: any local classifier's features (a hooked layer, pooled)
  and logits, for PROXY metrics (e.g. the digits demo); ``standard`` is always False.
"""
import contextlib
import difflib
import importlib
import os
import os.path as osp

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

TORCH_FIDELITY_REQUIREMENT = 'torch-fidelity==0.4.0'
INCEPTION_WEIGHTS_URL = ('https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/'
                         'weights-inception-2015-12-05-6726825d.pth')
INCEPTION_WEIGHTS_FILE = osp.basename(INCEPTION_WEIGHTS_URL)
INCEPTION_NAME = 'inception-v3-compat'


class FeatureExtractorError(ValueError):
    """An extractor that cannot be built (missing weights or package) or was fed bad images."""


def _check_images(images, who):
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        what = (f'a {images.dtype} tensor of shape {tuple(images.shape)}'
                if isinstance(images, torch.Tensor) else type(images).__name__)
        raise FeatureExtractorError(
            f'{who}: got {what}; expected torch.uint8 images [N, C, H, W] with values 0..255, '
            f'quantised as they would be saved to PNG (generation_dmd.generator.to_uint8, or '
            f'(x * 127.5 + 128).clip(0, 255).to(torch.uint8) for images in [-1, 1]).')


def _float(x):
    return x if x.dtype == torch.float64 else x.float()  # float64 extractors keep their precision


class GenerationFeatureExtractor(torch.nn.Module):
    """Base of the extractors: batching, device, no gradients; subclasses define ``extract``.

    ``extract(images_uint8_on_device) -> (features [n, D], logits [n, K] or None)``.
    ``device=None``: the current CUDA device when there is one (each rank's own), else the CPU,
    decided at the first call.
    """

    name = 'feature-extractor'
    standard = False

    def __init__(self, batch_size=64, device=None):
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise FeatureExtractorError(f'{type(self).__name__}: batch_size={batch_size!r}; '
                                        f'expected a positive int.')
        self.batch_size = batch_size
        self._device = device

    def _resolve_device(self):
        if self._device is None:
            self._device = (torch.device('cuda', torch.cuda.current_device())
                            if torch.cuda.is_available() else torch.device('cpu'))
            self.to(self._device)
        return torch.device(self._device)

    def extract(self, images):
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, images):
        _check_images(images, self.name)
        device = self._resolve_device()
        feats, logits = [], []
        for start in range(0, len(images), self.batch_size):
            f, lg = self.extract(images[start:start + self.batch_size].to(device))
            feats.append(_float(f).flatten(1).cpu())
            if lg is not None:
                logits.append(_float(lg).cpu())
        if not feats:
            raise FeatureExtractorError(f'{self.name}: got 0 images; expected at least one.')
        return dict(features=torch.cat(feats), logits=torch.cat(logits) if logits else None)


def _adapt_channels(images, channels, who):
    c = images.shape[1]
    if channels is None or c == channels:
        return images
    if c == 1:
        return images.expand(-1, channels, -1, -1)
    if channels == 1 and c == 3:
        return images.float().mean(dim=1, keepdim=True).round().to(images.dtype)
    raise FeatureExtractorError(
        f'{who}: images with {c} channels; expected {channels} (1-channel images are repeated, '
        f'RGB averaged to gray for a 1-channel model). Convert the images first.')


@contextlib.contextmanager
def _torch_fidelity_reads(state_dict):
    """Make torch-fidelity's Inception take ``state_dict`` instead of downloading or unpickling.

    With ``feature_extractor_weights_path=None`` its constructor calls the module-level
    ``load_state_dict_from_url``; that one name is swapped while our constructor runs.
    """
    from torch_fidelity import feature_extractor_inceptionv3 as module
    original = module.load_state_dict_from_url
    module.load_state_dict_from_url = lambda *args, **kwargs: state_dict
    try:
        yield module.FeatureExtractorInceptionV3
    finally:
        module.load_state_dict_from_url = original


@MODELS.register_module()
class InceptionFeatureExtractor(GenerationFeatureExtractor):
    """The FID / IS protocol's Inception-v3 (torch-fidelity's TF-Inception port), offline.

    Args:
        weights_path (str): torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``
            (see ``docs/fid.md`` for where to fetch it on a connected machine).
        batch_size (int): images per forward pass (each is resized to 299 x 299 inside).
        device: see :class:`GenerationFeatureExtractor`.

    Output: ``features`` = the 2048-d pool features ('2048', FID), ``logits`` = the 1008
    'logits_unbiased' (IS). 1-channel images are repeated to RGB.
    """

    standard = True

    def __init__(self, weights_path, batch_size=64, device=None):
        super().__init__(batch_size=batch_size, device=device)
        self.name = INCEPTION_NAME
        self.weights_path = weights_path
        where = (f'Fetch it on a connected machine from {INCEPTION_WEIGHTS_URL} (torch-fidelity '
                 f'would download this same file), copy it here, e.g. to '
                 f'data/fid_refs/{INCEPTION_WEIGHTS_FILE}, and set weights_path (or --weights) '
                 f'to it; see docs/fid.md.')
        if not weights_path or not osp.isfile(os.fspath(weights_path)):
            raise FeatureExtractorError(
                f'InceptionFeatureExtractor: weights_path={weights_path!r} is not a file; '
                f'expected torch-fidelity\'s Inception weights {INCEPTION_WEIGHTS_FILE} (nothing '
                f'is downloaded at run time; relative paths are resolved from '
                f'{os.getcwd()!r}). {where}')
        try:
            importlib.import_module('torch_fidelity')
        except ImportError as err:
            raise FeatureExtractorError(
                f'InceptionFeatureExtractor needs torch-fidelity, which is not installed '
                f'({err}). Install it with: pip install {TORCH_FIDELITY_REQUIREMENT} (it only '
                f'needs torch, numpy, scipy, pillow and tqdm).') from err
        from common.io.checkpoint import load_checkpoint, state_dict_from_checkpoint
        state = state_dict_from_checkpoint(load_checkpoint(os.fspath(weights_path)))
        with _torch_fidelity_reads(state) as inception_cls:
            try:
                self.inception = inception_cls(INCEPTION_NAME, ['2048', 'logits_unbiased'])
            except RuntimeError as err:  # load_state_dict(strict=True): missing / unexpected keys
                raise FeatureExtractorError(
                    f'InceptionFeatureExtractor: {weights_path!r} is not torch-fidelity\'s '
                    f'Inception-v3 state dict ({" ".join(str(err).split())[:300]}). {where}'
                ) from err
        self.inception.eval().requires_grad_(False)

    def extract(self, images):
        features, logits = self.inception(_adapt_channels(images, 3, self.name))
        return features, logits


def _build_module(model):
    if isinstance(model, torch.nn.Module):
        return model
    if isinstance(model, dict) or hasattr(model, 'keys'):
        return MODELS.build(dict(model))
    raise FeatureExtractorError(
        f'ClassifierFeatureExtractor: model={model!r}; expected an nn.Module or a MODELS config '
        f"dict (e.g. dict(type='mmpretrain.ImageClassifier', ...)).")


def _pool(output):
    if isinstance(output, (tuple, list)):
        output = output[-1]  # mmpretrain backbones / necks return tuples of stages
    if isinstance(output, dict):
        raise FeatureExtractorError('ClassifierFeatureExtractor: the hooked layer returns a dict; '
                                    'hook a layer that returns a tensor.')
    if output.ndim == 4:
        output = output.mean(dim=(2, 3))  # global average pool of a feature map
    return output.flatten(1)


@MODELS.register_module()
class ClassifierFeatureExtractor(GenerationFeatureExtractor):
    """A local classifier's pooled features and logits, for PROXY Fréchet distances and scores.

    Args:
        model (nn.Module | dict): the classifier, or its MODELS config (built here).
        checkpoint (str | None): weights to load (``common.io.load_checkpoint``: safetensors or
            ``weights_only`` torch files; ``state_dict`` / mmengine checkpoints), strict.
        feature_layer (str | None): dotted name of the module whose output are the features
            (tuples: last item; feature maps: global average pooled). None: the model output.
        logits (bool): whether the model output is class logits (reported for a proxy IS).
        resize (int | (int, int) | None): bilinear resize before the model.
        mean, std (float | sequence): normalisation in 0..255 units (mmpretrain's convention);
            the default maps uint8 to [-1, 1].
        in_channels (int | None): channels the model takes (1-channel images are repeated).
        name (str | None): default ``classifier:<ClassName>:<feature_layer>``.
    """

    def __init__(self, model, checkpoint=None, feature_layer=None, logits=True, resize=None,
                 mean=127.5, std=127.5, in_channels=None, batch_size=256, device=None,
                 name=None):
        super().__init__(batch_size=batch_size, device=device)
        self.model = _build_module(model)
        if checkpoint is not None:
            from common.io.checkpoint import load_checkpoint, state_dict_from_checkpoint
            state = state_dict_from_checkpoint(load_checkpoint(os.fspath(checkpoint)))
            self.model.load_state_dict(state, strict=True)
        self.model.eval().requires_grad_(False)
        self.feature_layer = feature_layer
        self.return_logits = bool(logits)
        self.resize = (resize, resize) if isinstance(resize, int) else resize
        self.in_channels = in_channels
        self.register_buffer('mean', torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer('std', torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1),
                             persistent=False)
        self._captured = None
        if feature_layer is not None:
            modules = dict(self.model.named_modules())
            if feature_layer not in modules:
                close = difflib.get_close_matches(feature_layer, list(modules), n=5, cutoff=0.5)
                raise FeatureExtractorError(
                    f'ClassifierFeatureExtractor: feature_layer={feature_layer!r} is not a module '
                    f'of {type(self.model).__name__}; expected a dotted name from '
                    f'named_modules() ({", ".join(close) or ", ".join(list(modules)[1:9])} ...).'
                    f' Fix feature_layer.')
            modules[feature_layer].register_forward_hook(self._capture)
        self.name = name or f'classifier:{type(self.model).__name__}:{feature_layer or "output"}'

    @property
    def standard(self):
        return False  # never the protocol's network, whatever it is

    def _capture(self, module, inputs, output):
        self._captured = output

    def extract(self, images):
        x = _adapt_channels(images, self.in_channels, self.name).float()
        if self.resize is not None and tuple(x.shape[-2:]) != tuple(self.resize):
            x = F.interpolate(x, size=tuple(self.resize), mode='bilinear', align_corners=False)
        x = (x - self.mean) / self.std
        self._captured = None
        output = self.model(x)
        logits = _pool(output) if self.return_logits else None
        if self.feature_layer is None:
            return _pool(output), logits
        features, self._captured = self._captured, None
        return _pool(features), logits
