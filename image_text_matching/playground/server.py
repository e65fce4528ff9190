"""The image-text matching playground: a web page over DSDScorer, served by the standard library.

Upload one image and type several captions (text retrieval: which caption fits the image), or
upload several images for one caption (image retrieval: which image fits the caption); the page
shows every candidate's DSD, attention and ITM scores and the cross-attention heat map of the best
match over its image. ``tools/itm_playground.py`` starts it; :func:`build_playground` and
:func:`make_server` are what the tool and the tests call.

The one rule: every request is checked before the model sees it (bytes and pixels of each image,
number of candidates, empty captions, the JSON shape) and every failure answers
``{"error": "<one paragraph>"}`` with a 4xx status (5xx when the model itself failed), which the
page shows as it is, never a traceback; the model runs under one lock, one request at a time.

HTTP API (JSON, UTF-8):

``GET /api/info``   the model, timesteps, input size and the limits below.
``POST /api/score`` ``{"images": [{"name": "cat.png", "data": "<base64 or data: URL>"}, ...],
                    "texts": ["a cat", "a dog", ...]}`` with either one image and 1..N captions or
                    2..N images and one caption; answers ``{"retrieval": "text"|"image",
                    "candidates": [{"label", "dsd", "attention", "itm"}, ...], "best": i,
                    "best_by": {"dsd": i, "attention": j, "itm": k}, "heatmap": "data:image/png;
                    base64,...", "heatmap_label", "heatmap_range": [lo, hi], "seconds", ...}``.

Scores are :meth:`DSDScorer.score`'s (higher = better match). For image retrieval the ITM column
is Diffusion-ITM's unconditionally normalised error, ``d_uncond - d_cond`` (``= dsd - attention``),
as the reference does for image retrieval; for text retrieval it is the scorer's own ``itm``.
"""
import base64
import binascii
import dataclasses
import io
import json
import logging
import math
import os
import threading
import time
import warnings
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import torch
from PIL import Image, ImageOps

logger = logging.getLogger('itm_playground')

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')
# URL path -> (file under static/, content type); nothing else on disk is ever served.
STATIC_FILES = {
    '/': ('index.html', 'text/html; charset=utf-8'),
    '/index.html': ('index.html', 'text/html; charset=utf-8'),
    '/app.js': ('app.js', 'text/javascript; charset=utf-8'),
    '/style.css': ('style.css', 'text/css; charset=utf-8'),
}
HEATMAP_SIDE = 320  # long side of the heat-map picture on the page, in pixels
HEATMAP_ALPHA = 0.5  # weight of the colour map over the image
HEATMAP_COLORMAP = 'jet'
MIB = 1024 * 1024
# The decoders an upload may use (PIL knows many more; odd formats are refused, not tried).
IMAGE_FORMATS = ('PNG', 'JPEG', 'GIF', 'BMP', 'WEBP')


class PlaygroundError(Exception):
    """A request the playground refuses; ``status`` is the HTTP status of the JSON answer."""

    def __init__(self, message, status=HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = int(status)


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may carry (checked before decoding or scoring anything)."""
    max_request_bytes: int = 40 * MIB  # the whole JSON body (base64 makes images 4/3 larger)
    max_image_bytes: int = 10 * MIB  # one uploaded file
    max_image_pixels: int = 4096 * 4096  # width x height of one image (decompression bombs)
    max_candidates: int = 10  # captions for one image, or images for one caption
    max_caption_chars: int = 300

    def as_dict(self):
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- images
def _size(n):
    """A byte count for people: ``512 bytes``, ``3.9 KiB``, ``12.0 MiB``."""
    if n < 1024:
        return f'{n} bytes'
    return f'{n / 1024:.1f} KiB' if n < MIB else f'{n / MIB:.1f} MiB'


def decode_image(data, name, limits):
    """An uploaded image (base64 text or a ``data:`` URL) as an RGB ``PIL.Image``, or a
    :class:`PlaygroundError` saying what was wrong with it."""
    if not isinstance(data, str) or not data:
        raise PlaygroundError(f'Image {name!r} has no data: send each image as '
                              f'{{"name": ..., "data": "<base64 or data: URL>"}}.')
    if data.startswith('data:'):
        _, sep, data = data.partition(',')
        if not sep:
            raise PlaygroundError(f'Image {name!r}: the data: URL has no comma before its '
                                  f'base64 content.')
    if len(data) * 3 // 4 > limits.max_image_bytes + 3:
        raise PlaygroundError(
            f'Image {name!r} is too large: about {_size(len(data) * 3 // 4)}, the limit is '
            f'{_size(limits.max_image_bytes)} per image. Save it smaller (e.g. as a JPEG of at '
            f'most 2048 px) and upload it again.', HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise PlaygroundError(f'Image {name!r} is not valid base64; the page sends files as '
                              f'data: URLs (FileReader.readAsDataURL).') from None
    if len(raw) > limits.max_image_bytes:
        raise PlaygroundError(
            f'Image {name!r} is too large: {_size(len(raw))}, the limit is '
            f'{_size(limits.max_image_bytes)} per image. Save it smaller and upload it again.',
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    not_an_image = (f'{name!r} is not an image this server can read ({len(raw)} bytes that are '
                    f'not PNG, JPEG, GIF, BMP or WebP); upload a picture file.')

    def too_large(pixels):
        return PlaygroundError(
            f'Image {name!r} is too large: {pixels} pixels, the limit is '
            f'{limits.max_image_pixels:,} pixels. Resize it (it is scaled to the model\'s input '
            f'size anyway) and upload it again.', HTTPStatus.REQUEST_ENTITY_TOO_LARGE)

    try:
        image = Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)  # reads the header only
    except Image.DecompressionBombError:
        raise too_large(f'more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,}') from None
    except Exception:  # noqa: BLE001 - whatever a decoder raises on a foreign file
        raise PlaygroundError(not_an_image) from None
    width, height = image.size
    if width * height > limits.max_image_pixels:
        raise too_large(f'{width} x {height} = {width * height:,}')
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            image.load()
            image = ImageOps.exif_transpose(image)  # phone photos: upright as they are shown
            if image.mode in ('RGBA', 'LA', 'PA') or 'transparency' in image.info:
                image = image.convert('RGBA')  # transparent parts over white, as a page shows
                image = Image.alpha_composite(Image.new('RGBA', image.size, 'white'), image)
            return image.convert('RGB')
    except Exception:  # noqa: BLE001 - a damaged file makes decoders raise anything
        raise PlaygroundError(f'{name!r} could not be decoded: the file is truncated or damaged '
                              f'({width} x {height} in its header); upload a complete picture '
                              f'file.') from None


def image_tensor(image, size):
    """An RGB ``PIL.Image`` stretched to ``size x size`` as a float ``(3, S, S)`` in [-1, 1]."""
    resized = image.resize((size, size), Image.Resampling.LANCZOS)
    array = np.asarray(resized, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def heatmap_overlay(image, heat, side=HEATMAP_SIDE, alpha=HEATMAP_ALPHA,
                    colormap=HEATMAP_COLORMAP):
    """``(PNG bytes, (lo, hi))``: ``heat`` (an ``(h, w)`` map over the stretched input) scaled
    to [0, 1] between its min and max, coloured and blended over ``image`` shown with its own
    aspect ratio and its long side at ``side`` pixels. A constant map shows as all-low."""
    from matplotlib import colormaps
    width, height = image.size
    scale = side / max(width, height)
    shown = (max(1, round(width * scale)), max(1, round(height * scale)))
    heat = torch.as_tensor(heat, dtype=torch.float32).detach().cpu()
    lo, hi = float(heat.min()), float(heat.max())
    unit = (heat - lo) / (hi - lo) if hi > lo else torch.zeros_like(heat)
    unit = torch.nn.functional.interpolate(unit[None, None], size=(shown[1], shown[0]),
                                           mode='bilinear', align_corners=False)[0, 0]
    colours = colormaps[colormap](unit.clamp(0, 1).numpy())[..., :3]
    base = np.asarray(image.resize(shown, Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    blend = (1 - alpha) * base + alpha * colours
    picture = Image.fromarray(np.clip(np.rint(blend * 255), 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    picture.save(buffer, format='PNG')
    return buffer.getvalue(), (lo, hi)


# ----------------------------------------------------------------------------- the app
def _argmax(values):
    return max(range(len(values)), key=lambda i: values[i])


class Playground:
    """What the page talks to: checks a request, scores it with ``scorer`` and renders the answer.

    ``scorer``: a :class:`DSDScorer` (or anything with its ``score`` and ``attention_maps``);
    ``image_size``: the side every image is stretched to before scoring. Thread-safe: requests
    are decoded in parallel and scored one at a time.
    """

    def __init__(self, scorer, image_size, limits=None, model_name='', timesteps=None):
        self.scorer = scorer
        self.image_size = int(image_size)
        self.limits = limits or Limits()
        self.model_name = model_name
        self.timesteps = timesteps
        self.lock = threading.Lock()

    def info(self):
        return dict(model=self.model_name, timesteps=self.timesteps,
                    image_size=self.image_size, limits=self.limits.as_dict())

    # -------------------------------------------------------------- request checks
    def parse(self, payload):
        """``(retrieval, [(name, PIL image)], [caption])`` from a request, or PlaygroundError."""
        limits = self.limits
        if not isinstance(payload, dict):
            raise PlaygroundError('The request must be a JSON object {"images": [...], '
                                  '"texts": [...]}.')
        images, texts = payload.get('images'), payload.get('texts')
        if not isinstance(images, list) or not isinstance(texts, list):
            raise PlaygroundError('The request needs "images" (a list of {"name", "data"}) and '
                                  '"texts" (a list of captions).')
        if not images:
            raise PlaygroundError('Upload at least one image.')
        if not texts:
            raise PlaygroundError('Type at least one caption (one per line).')
        captions = []
        for i, text in enumerate(texts, 1):
            if not isinstance(text, str) or not text.strip():
                raise PlaygroundError(f'Caption {i} of {len(texts)} is empty; type one caption '
                                      f'per line, without blank lines.')
            if len(text.strip()) > limits.max_caption_chars:
                raise PlaygroundError(f'Caption {i} has {len(text.strip())} characters, the '
                                      f'limit is {limits.max_caption_chars}; shorten it.')
            captions.append(text.strip())
        if len(images) > 1 and len(captions) > 1:
            raise PlaygroundError(
                f'Got {len(images)} images and {len(captions)} captions: upload one image with '
                f'several captions (which caption fits?) or several images with one caption '
                f'(which image fits?).')
        retrieval = 'image' if len(images) > 1 else 'text'
        count = len(images) if retrieval == 'image' else len(captions)
        if count > limits.max_candidates:
            what = 'images' if retrieval == 'image' else 'captions'
            raise PlaygroundError(f'Too many candidates: {count} {what}, the limit is '
                                  f'{limits.max_candidates}; remove some and score again.')
        decoded = []
        for i, item in enumerate(images, 1):
            if not isinstance(item, dict):
                raise PlaygroundError(f'Image {i} must be an object {{"name": ..., "data": ...}}.')
            name = str(item.get('name') or f'image {i}')[:100]
            decoded.append((name, decode_image(item.get('data'), name, limits)))
        return retrieval, decoded, captions

    # -------------------------------------------------------------- scoring
    def score(self, payload):
        """The answer to ``POST /api/score`` (see the module docstring)."""
        retrieval, images, captions = self.parse(payload)
        batch = torch.stack([image_tensor(img, self.image_size) for _, img in images])
        with self.lock, torch.no_grad():
            start = time.perf_counter()
            device = _module_device(self.scorer)
            scores = self.scorer.score(batch.to(device), captions)
            scores = {k: v.detach().float().cpu() for k, v in scores.items()}
            if retrieval == 'text':
                columns = {k: v[0] for k, v in scores.items()}
            else:
                columns = {k: v[:, 0] for k, v in scores.items()}
                columns['itm'] = columns['dsd'] - columns['attention']  # d_uncond - d_cond
            values = {k: [float(x) for x in columns[k]] for k in ('dsd', 'attention', 'itm')}
            best = _argmax(values['dsd'])
            image_index, text_index = (0, best) if retrieval == 'text' else (best, 0)
            heat = self.scorer.attention_maps(batch[image_index].to(device),
                                              [captions[text_index]])[0]
            seconds = time.perf_counter() - start
        for key, column in values.items():
            if not all(math.isfinite(x) for x in column):
                raise PlaygroundError(f'The model returned a non-finite {key} score; the weights '
                                      f'may be broken or the dtype too small.',
                                      HTTPStatus.INTERNAL_SERVER_ERROR)
        png, heat_range = heatmap_overlay(images[image_index][1], heat)
        labels = captions if retrieval == 'text' else [name for name, _ in images]
        return dict(
            retrieval=retrieval,
            query=images[0][0] if retrieval == 'text' else captions[0],
            candidates=[dict(label=label, dsd=values['dsd'][i], attention=values['attention'][i],
                             itm=values['itm'][i]) for i, label in enumerate(labels)],
            best=best, best_by={k: _argmax(v) for k, v in values.items()},
            heatmap='data:image/png;base64,' + base64.b64encode(png).decode('ascii'),
            heatmap_label=f'{images[image_index][0]} / "{captions[text_index]}"',
            heatmap_range=list(heat_range), itm_kind=self._itm_kind(retrieval),
            seconds=seconds, timesteps=self.timesteps, image_size=self.image_size)


    def _itm_kind(self, retrieval):
        """What the ITM column holds: Diffusion-ITM's ``-d_cond``, or ``d_uncond - d_cond``
        (image retrieval, or a scorer built with ``itm_unconditional_normalise``)."""
        normalised = retrieval == 'image' or getattr(self.scorer, 'itm_unconditional_normalise',
                                                     False)
        return 'd_uncond - d_cond' if normalised else '-d_cond'


def _module_device(module):
    """The device of a module's first parameter (CPU for one without parameters)."""
    try:
        return next(module.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device('cpu')


# ----------------------------------------------------------------------------- HTTP
class _Handler(BaseHTTPRequestHandler):
    """Static page + JSON API; one log line per request (:meth:`_log`)."""
    server_version = 'DiffTeacherPlayground/1'
    protocol_version = 'HTTP/1.1'
    timeout = 120  # seconds a connection may stall (e.g. a body shorter than its length)
    static = {}  # filled by make_server: URL path -> (bytes, content type)

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # replaced by the single line of _log

    def _log(self, status, note=''):
        seconds = time.perf_counter() - self._started
        logger.info('%s %s %s %d %.2fs%s', self.client_address[0], self.command,
                    self.path.split('?')[0][:200], status, seconds, f' {note}' if note else '')

    def _send(self, status, body, content_type, note='', close=False):
        """Answer ``body``; the request's log line is written before the body, so it is in the
        log by the time the client has the answer."""
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Cache-Control', 'no-store')
        self.send_header('X-Content-Type-Options', 'nosniff')
        if close:
            self.send_header('Connection', 'close')
            self.close_connection = True
        self.end_headers()
        self._log(status, note)
        if self.command != 'HEAD':
            self.wfile.write(body)

    def _json(self, status, obj, note='', close=False):
        self._send(status, json.dumps(obj).encode('utf-8'), 'application/json; charset=utf-8',
                   note=note, close=close)

    def _error(self, status, message, close=False):
        self._json(status, dict(error=message), note=f'error: {message[:160]}', close=close)

    def do_GET(self):  # noqa: N802 - http.server's name
        self._started = time.perf_counter()
        path = self.path.split('?')[0]
        if path in self.static:
            body, content_type = self.static[path]
            self._send(HTTPStatus.OK, body, content_type)
        elif path == '/api/info':
            self._json(HTTPStatus.OK, self.server.playground.info())
        else:
            self._error(HTTPStatus.NOT_FOUND, f'No page {path!r} here; open / for the playground.')

    do_HEAD = do_GET

    def do_POST(self):  # noqa: N802 - http.server's name
        self._started = time.perf_counter()
        path = self.path.split('?')[0]
        playground = self.server.playground
        limits = playground.limits
        length = self.headers.get('Content-Length')
        if length is None or not length.isdigit():
            return self._error(HTTPStatus.LENGTH_REQUIRED, 'The request has no Content-Length; '
                               'send the JSON body with its length.', close=True)
        length = int(length)
        if length > limits.max_request_bytes:
            self._discard(length)
            return self._error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f'The request is too large: {_size(length)}, the limit is '
                f'{_size(limits.max_request_bytes)} in all (at most {limits.max_candidates} '
                f'images of at most {_size(limits.max_image_bytes)} each). Upload fewer or smaller '
                f'images.', close=True)
        body = self.rfile.read(length)
        if path != '/api/score':
            return self._error(HTTPStatus.NOT_FOUND, f'No API {path!r}; POST to /api/score.')
        content_type = self.headers.get('Content-Type', '').split(';')[0].strip().lower()
        if content_type != 'application/json':
            return self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                               f'POST /api/score takes JSON (Content-Type: application/json), '
                               f'got {content_type or "no content type"!r}.')
        try:
            payload = json.loads(body.decode('utf-8'))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return self._error(HTTPStatus.BAD_REQUEST, f'The request body is not valid UTF-8 '
                               f'JSON ({err}); send {{"images": [...], "texts": [...]}}.')
        try:
            answer = playground.score(payload)
        except PlaygroundError as err:
            return self._error(err.status, str(err))
        except Exception as err:  # noqa: BLE001 - the page gets a sentence, the log the traceback
            logger.exception('scoring failed')
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR,
                               f'The model failed on this request ({type(err).__name__}: '
                               f'{" ".join(str(err).split())[:300]}); the server log has the '
                               f'details.')
        note = (f'{answer["retrieval"]} retrieval, {len(answer["candidates"])} candidates, '
                f'best {answer["best"]}, model {answer["seconds"]:.2f}s')
        self._json(HTTPStatus.OK, answer, note=note)

    def _discard(self, length, chunk=1 << 20, cap=256 * MIB):
        """Read and drop a refused body (so the client sees the answer, not a reset); a body
        over ``cap`` is not read: the connection is closed after the answer."""
        if length > cap:
            return
        while length > 0:
            data = self.rfile.read(min(chunk, length))
            if not data:
                break
            length -= len(data)


def _read_static():
    files = {}
    for url, (name, content_type) in STATIC_FILES.items():
        with open(os.path.join(STATIC_DIR, name), 'rb') as f:
            files[url] = (f.read(), content_type)
    return files


def make_server(playground, host='127.0.0.1', port=7860):
    """A ``ThreadingHTTPServer`` serving ``playground`` (not started: call ``serve_forever``;
    ``port=0`` picks a free port, read it from ``server.server_address[1]``)."""
    handler = type('PlaygroundHandler', (_Handler, ), dict(static=_read_static()))
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    server.playground = playground
    return server


# ----------------------------------------------------------------------------- building
def default_image_size(scorer):
    """The side images are scored at: the scorer's ``image_size``, else the UNet's sample size
    times the VAE's down-sampling factor (512 for SD 2.1-base, 64 x 8)."""
    size = getattr(scorer, 'image_size', None)
    if size:
        return int(size if isinstance(size, int) else size[0])
    sample = scorer.unet.config.sample_size
    sample = sample if isinstance(sample, int) else sample[0]
    vae = getattr(scorer, 'vae', None)
    factor = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1
    return int(sample * factor)


def build_playground(pretrained, lora=None, timesteps=10, device='cpu', image_size=None,
                     limits=None, noise_seed=0, dtype=torch.float32):
    """Load ``pretrained`` (an SD pipeline folder or hub id) as a :class:`DSDScorer` on
    ``device`` with ``timesteps`` evenly spaced timesteps, apply the LoRA weights of the folder
    ``lora`` if given, and wrap it in a :class:`Playground`."""
    from image_text_matching.models import DSDScorer
    scorer = DSDScorer(pretrained=pretrained, num_timesteps=timesteps, noise_seed=noise_seed,
                       image_size=image_size, dtype=dtype)
    if lora is not None:
        load_lora(scorer, lora)
    scorer.to(device).eval()
    name = os.path.basename(os.path.normpath(pretrained)) + (
        f' + LoRA {os.path.basename(os.path.normpath(lora))}' if lora else '')
    return Playground(scorer, image_size or default_image_size(scorer), limits=limits,
                      model_name=name, timesteps=len(scorer.timesteps))


def load_lora(scorer, path):
    """Apply the LoRA weights saved in ``path`` (a folder or ``.safetensors`` file written by
    prompt learning) to ``scorer.unet``; a file that does not fit raises ``LoRAError``."""
    from image_text_matching.models.lora import load_lora as load
    load(scorer.unet, path)
