"""The image-text matching playground: its JSON API, its page in headless Chromium, and its tool.

Two servers run in threads on free local ports: one over a stand-in scorer whose scores are
written out here (so answers are checked number by number, and the limits are small enough to hit
with tiny files), one over a real ``DSDScorer`` on a tiny random Stable Diffusion pipeline, whose
answers must equal ``DSDScorer.score`` called directly. The browser test needs Debian's
``chromium`` and ``chromium-driver`` packages and is skipped, saying so, without them.
"""
import base64
import io
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from image_text_matching.playground import (Limits, Playground, heatmap_overlay, image_tensor,
                                            make_server)
from tests.helpers.tiny_models import save_sd_pipeline

CHROMIUM = '/usr/bin/chromium'
CHROMEDRIVER = '/usr/bin/chromedriver'
SMALL = Limits(max_request_bytes=64 * 1024, max_image_bytes=4096, max_image_pixels=64 * 64,
               max_candidates=3, max_caption_chars=40)


# ----------------------------------------------------------------------------- helpers
class FakeScorer:
    """Scores written out: attention = mean of the image + len(text) / 100, the ITM term
    C = d_uncond - d_cond = -mean of the image's red channel * (index of the text + 1), itm = 10 +
    C - len(text) / 1000 (another value, so the image-retrieval ITM = dsd - attention is
    visible), dsd = attention + C; the heat map of (image, text) is the image's red channel."""

    def __init__(self, delay=0.0):
        self.delay = delay
        self.active = 0
        self.most_active = 0
        self.calls = []

    def parameters(self):
        return iter(())

    @staticmethod
    def expected(images, texts):
        attention = np.array([[float(img.mean()) + len(t) / 100 for t in texts] for img in images])
        c = np.array([[-float(img[0].mean()) * (j + 1) for j in range(len(texts))]
                      for img in images])
        itm = 10 + c - np.array([[len(t) / 1000 for t in texts] for _ in images])
        return dict(attention=attention, itm=itm, dsd=attention + c)

    def score(self, images, texts):
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        self.calls.append((tuple(images.shape), list(texts)))
        time.sleep(self.delay)
        self.active -= 1
        return {k: torch.tensor(v) for k, v in self.expected(images, texts).items()}

    def attention_maps(self, image, texts):
        return image[0][None].expand(len(texts), -1, -1).clone()


class BrokenScorer(FakeScorer):
    def score(self, images, texts):
        raise RuntimeError('CUDA out of memory. Tried to allocate 20.00 GiB')


def png_b64(array):
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format='PNG')
    return base64.b64encode(buffer.getvalue()).decode('ascii')


def picture(width=32, height=16, seed=0):
    """A red left half, a blue right half and a little noise (a PNG of about 1.5 KB)."""
    rng = np.random.default_rng(seed)
    array = np.zeros((height, width, 3), np.float64)
    array[:, :width // 2, 0] = 220
    array[:, width // 2:, 2] = 200
    return np.clip(array + rng.normal(0, 4, array.shape), 0, 255).astype(np.uint8)


def post(url, payload=None, body=None, content_type='application/json'):
    """``(status, decoded JSON answer)`` of a POST, also for 4xx / 5xx answers."""
    data = body if body is not None else json.dumps(payload).encode('utf-8')
    request = urllib.request.Request(url, data=data, method='POST',
                                     headers={'Content-Type': content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers.get('Content-Type'), response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get('Content-Type'), err.read()


class Served:
    """A playground served in a daemon thread on a free port of 127.0.0.1."""

    def __init__(self, playground):
        self.playground = playground
        self.server = make_server(playground, '127.0.0.1', 0)
        self.url = f'http://127.0.0.1:{self.server.server_address[1]}/'
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope='module')
def fake():
    served = Served(Playground(FakeScorer(), image_size=8, limits=SMALL, model_name='fake',
                               timesteps=2))
    yield served
    served.close()


@pytest.fixture(scope='module')
def tiny_pipeline(tmp_path_factory):
    return save_sd_pipeline(str(tmp_path_factory.mktemp('itm_playground') / 'sd'))


@pytest.fixture(scope='module')
def real(tiny_pipeline):
    from image_text_matching.playground import build_playground
    served = Served(build_playground(tiny_pipeline, timesteps=2, device='cpu'))
    yield served
    served.close()


# ----------------------------------------------------------------------------- API, stand-in
def test_page_and_info_are_served_and_nothing_else(fake):
    status, content_type, body = get(fake.url)
    assert (status, content_type) == (200, 'text/html; charset=utf-8')
    assert b'<input type="file" id="images" accept="image/*" multiple>' in body
    for name, kind in (('app.js', 'text/javascript'), ('style.css', 'text/css')):
        status, content_type, body = get(fake.url + name)
        assert status == 200 and content_type.startswith(kind) and len(body) > 500
    status, _, body = get(fake.url + 'api/info')
    assert status == 200
    assert json.loads(body) == dict(model='fake', timesteps=2, image_size=8,
                                    limits=SMALL.as_dict())
    for path in ('server.py', '../server.py', 'static/app.js', '%2e%2e/server.py'):
        status, content_type, body = get(fake.url + path)
        assert status == 404 and content_type.startswith('application/json')
        assert json.loads(body)['error'].endswith('open / for the playground.')


def test_text_retrieval_scores_and_heatmap(fake):
    array = picture()
    texts = ['a red block', 'blue', 'a red and blue flag']
    status, answer = post(fake.url + 'api/score', dict(
        images=[dict(name='flag.png', data='data:image/png;base64,' + png_b64(array))],
        texts=[' a red block ', 'blue', 'a red and blue flag']))
    assert status == 200, answer
    # the scorer saw the image stretched to 8 x 8, as image_tensor makes it
    tensor = image_tensor(Image.fromarray(array), 8)
    assert fake.playground.scorer.calls[-1] == ((1, 3, 8, 8), texts)
    expected = FakeScorer.expected(tensor[None], texts)
    assert answer['retrieval'] == 'text' and answer['query'] == 'flag.png'
    assert answer['itm_kind'] == '-d_cond'
    assert [c['label'] for c in answer['candidates']] == texts
    for key in ('dsd', 'attention', 'itm'):
        got = [c[key] for c in answer['candidates']]
        np.testing.assert_allclose(got, expected[key][0], rtol=1e-6)
        assert answer['best_by'][key] == int(np.argmax(expected[key][0]))
    assert answer['best'] == answer['best_by']['dsd']
    assert answer['best_by']['attention'] == 2  # the same image: the longest caption
    assert answer['heatmap_label'] == f'flag.png / "{texts[answer["best"]]}"'
    # the heat map is the red channel: high on the left half, low on the right
    lo, hi = answer['heatmap_range']
    assert (lo, hi) == pytest.approx((float(tensor[0].min()), float(tensor[0].max())))
    prefix = 'data:image/png;base64,'
    assert answer['heatmap'].startswith(prefix)
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer['heatmap'][len(prefix):]))))
    assert shown.shape == (160, 320, 3)  # the upload's 2:1 aspect, long side 320
    left, right = shown[80, 40].astype(int), shown[80, 280].astype(int)
    # half jet over the image: jet(top) = (0.5..1, 0, 0) adds no blue over the red half,
    # jet(bottom) = (0, 0, 0.5) no red over the blue half (an inverted map adds 64 of each)
    assert left[0] > 150 and left[2] < 20
    assert right[0] < 20 and right[2] > 150


def test_image_retrieval_uses_normalised_itm(fake):
    arrays = [picture(seed=1), picture(seed=2)[:, ::-1], np.full((16, 16, 3), 90, np.uint8)]
    images = [dict(name=f'img{i}.png', data=png_b64(a)) for i, a in enumerate(arrays)]
    status, answer = post(fake.url + 'api/score', dict(images=images, texts=['a red flag']))
    assert status == 200, answer
    tensors = torch.stack([image_tensor(Image.fromarray(a), 8) for a in arrays])
    expected = FakeScorer.expected(tensors, ['a red flag'])
    assert answer['retrieval'] == 'image' and answer['query'] == 'a red flag'
    assert [c['label'] for c in answer['candidates']] == ['img0.png', 'img1.png', 'img2.png']
    np.testing.assert_allclose([c['dsd'] for c in answer['candidates']], expected['dsd'][:, 0],
                               rtol=1e-6)
    # ITM for image retrieval is d_uncond - d_cond = dsd - attention, not the scorer's itm
    np.testing.assert_allclose([c['itm'] for c in answer['candidates']],
                               expected['dsd'][:, 0] - expected['attention'][:, 0], atol=1e-6)
    assert answer['itm_kind'] == 'd_uncond - d_cond'
    assert answer['best'] == int(np.argmax(expected['dsd'][:, 0])) == 2  # no red at all


def _encoded(array, kind):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=kind)
    return base64.b64encode(buffer.getvalue()).decode('ascii')


def _noisy_png(side, seed=0):
    return png_b64(np.random.default_rng(seed).integers(0, 256, (side, side, 3)))


ONE = [dict(name='ok.png', data=png_b64(picture()))]
TIFF = _encoded(picture(), 'TIFF')
NOISE = _noisy_png(60)  # about 11 KB of random pixels
TRUNCATED = base64.b64encode(base64.b64decode(png_b64(picture()))[:200]).decode('ascii')
BAD_REQUESTS = {
    'text file as png': (
        dict(images=[dict(name='notes.png', data=base64.b64encode(b'just some notes\n').decode())],
             texts=['a cat']), 400,
        "'notes.png' is not an image this server can read (16 bytes that are not PNG, JPEG, "
        "GIF, BMP or WebP); upload a picture file."),
    'too many bytes': (
        dict(images=[dict(name='noise.png', data=NOISE)], texts=['a cat']), 413,
        f"Image 'noise.png' is too large: about {len(base64.b64decode(NOISE)) / 1024:.1f} KiB, "
        "the limit is 4.0 KiB per image. Save it smaller (e.g. as a JPEG of at most 2048 px) "
        "and upload it again."),
    'too many pixels': (
        dict(images=[dict(name='big.png', data=png_b64(np.zeros((65, 64, 3))))], texts=['a']),
        413, "Image 'big.png' is too large: 64 x 65 = 4,160 pixels, the limit is 4,096 pixels. "
        "Resize it (it is scaled to the model's input size anyway) and upload it again."),
    'tiff': (
        dict(images=[dict(name='scan.tif', data=TIFF)], texts=['a']), 400,
        f"'scan.tif' is not an image this server can read ({len(base64.b64decode(TIFF))} bytes "
        "that are not PNG, JPEG, GIF, BMP or WebP); upload a picture file."),
    'truncated png': (
        dict(images=[dict(name='cut.png', data=TRUNCATED)], texts=['a cat']), 400,
        "'cut.png' could not be decoded: the file is truncated or damaged (32 x 16 in its "
        "header); upload a complete picture file."),
    'not base64': (
        dict(images=[dict(name='x.png', data='data:image/png;base64,@@@@')], texts=['a']), 400,
        "Image 'x.png' is not valid base64; the page sends files as data: URLs "
        "(FileReader.readAsDataURL)."),
    'too many captions': (
        dict(images=ONE, texts=['a', 'b', 'c', 'd']), 400,
        'Too many candidates: 4 captions, the limit is 3; remove some and score again.'),
    'too many images': (
        dict(images=ONE * 4, texts=['a']), 400,
        'Too many candidates: 4 images, the limit is 3; remove some and score again.'),
    'empty caption': (
        dict(images=ONE, texts=['a cat', '   ']), 400,
        'Caption 2 of 2 is empty; type one caption per line, without blank lines.'),
    'long caption': (
        dict(images=ONE, texts=['x' * 41]), 400,
        'Caption 1 has 41 characters, the limit is 40; shorten it.'),
    'images and captions': (
        dict(images=ONE * 2, texts=['a', 'b']), 400,
        'Got 2 images and 2 captions: upload one image with several captions (which caption '
        'fits?) or several images with one caption (which image fits?).'),
    'no image': (dict(images=[], texts=['a']), 400, 'Upload at least one image.'),
    'no caption': (dict(images=ONE, texts=[]), 400, 'Type at least one caption (one per line).'),
    'wrong shape': ([1, 2], 400,
                    'The request must be a JSON object {"images": [...], "texts": [...]}.'),
}


@pytest.mark.parametrize('case', sorted(BAD_REQUESTS))
def test_bad_requests_get_one_sentence(fake, case):
    payload, status, message = BAD_REQUESTS[case]
    calls = len(fake.playground.scorer.calls)
    assert post(fake.url + 'api/score', payload) == (status, dict(error=message))
    assert len(fake.playground.scorer.calls) == calls  # refused before the model


def test_bad_bodies(fake):
    url = fake.url + 'api/score'
    status, answer = post(url, body=b'{"images": [')
    assert status == 400 and answer['error'].startswith('The request body is not valid UTF-8 '
                                                        'JSON (Expecting value')
    assert post(url, body=b'{}', content_type='text/plain') == (415, dict(
        error="POST /api/score takes JSON (Content-Type: application/json), got 'text/plain'."))
    status, answer = post(url, body=b'x' * 70000)
    assert status == 413 and answer['error'] == (
        'The request is too large: 68.4 KiB, the limit is 64.0 KiB in all (at most 3 images of '
        'at most 4.0 KiB each). Upload fewer or smaller images.')
    assert post(fake.url + 'api/other', {}) == (404, dict(error="No API '/api/other'; POST to "
                                                               "/api/score."))
    # the server still answers after the refused large body
    assert get(fake.url + 'api/info')[0] == 200


def test_model_failure_is_a_sentence_not_a_traceback(caplog):
    served = Served(Playground(BrokenScorer(), image_size=8, limits=SMALL))
    try:
        with caplog.at_level('INFO', logger='itm_playground'):
            status, answer = post(served.url + 'api/score', dict(images=ONE, texts=['a']))
    finally:
        served.close()
    assert status == 500
    assert answer == dict(error='The model failed on this request (RuntimeError: CUDA out of '
                          'memory. Tried to allocate 20.00 GiB); the server log has the details.')
    # the traceback goes to the log, with the one request line
    assert any(r.exc_info for r in caplog.records)
    lines = [r.getMessage() for r in caplog.records if 'POST /api/score' in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith('127.0.0.1 POST /api/score 500 ')


def test_one_log_line_per_request_and_one_model_call_at_a_time(caplog):
    scorer = FakeScorer(delay=0.05)
    served = Served(Playground(scorer, image_size=8, limits=SMALL))
    payload = dict(images=ONE, texts=['a', 'bb'])
    try:
        with caplog.at_level('INFO', logger='itm_playground'):
            threads = [threading.Thread(target=post, args=(served.url + 'api/score', payload))
                       for _ in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            get(served.url)
    finally:
        served.close()
    assert len(scorer.calls) == 3 and scorer.most_active == 1
    lines = [r.getMessage() for r in caplog.records if r.name == 'itm_playground']
    assert len(lines) == 4
    assert sum(line.startswith('127.0.0.1 POST /api/score 200 ')
               and ' text retrieval, 2 candidates, best ' in line for line in lines) == 3
    assert lines[-1].startswith('127.0.0.1 GET / 200 ')


def test_transparent_pixels_are_shown_over_white(fake):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, :4] = (255, 0, 0, 255)  # opaque red left half, fully transparent (black) right half
    buffer = io.BytesIO()
    Image.fromarray(rgba, 'RGBA').save(buffer, format='PNG')
    data = base64.b64encode(buffer.getvalue()).decode('ascii')
    status, _ = post(fake.url + 'api/score', dict(images=[dict(name='t.png', data=data)],
                                                  texts=['a']))
    assert status == 200
    from image_text_matching.playground import decode_image
    rgb = np.asarray(decode_image(data, 't.png', SMALL))
    assert rgb.shape == (8, 8, 3)
    assert (rgb[:, :4] == (255, 0, 0)).all() and (rgb[:, 4:] == 255).all()


def test_heatmap_overlay_colours():
    gray = Image.fromarray(np.full((10, 20, 3), 128, np.uint8))
    heat = torch.zeros(4, 4)
    heat[:, 2:] = 3.0
    png, (lo, hi) = heatmap_overlay(gray, heat, side=40, alpha=0.5)
    assert (lo, hi) == (0.0, 3.0)
    shown = np.asarray(Image.open(io.BytesIO(png)))
    assert shown.shape == (20, 40, 3)
    # jet(0) = (0, 0, 0.5), jet(1) = (0.5, 0, 0); half of it over 128 gray
    np.testing.assert_allclose(shown[10, 2], [64, 64, 128], atol=2)
    np.testing.assert_allclose(shown[10, 37], [128, 64, 64], atol=2)
    png, (lo, hi) = heatmap_overlay(gray, torch.full((4, 4), 2.0), side=40, alpha=0.5)
    np.testing.assert_allclose(np.asarray(Image.open(io.BytesIO(png)))[5, 5], [64, 64, 128],
                               atol=2)


# ----------------------------------------------------------------------------- the real scorer
def test_real_scorer_answer_equals_direct_scores(real):
    array = picture(24, 24)
    texts = ['a red square', 'a blue circle']
    status, answer = post(real.url + 'api/score',
                          dict(images=[dict(name='sq.png', data=png_b64(array))], texts=texts))
    assert status == 200, answer
    playground = real.playground
    assert playground.image_size == 16  # tiny UNet 8 x 8 latents, VAE factor 2
    with torch.no_grad():
        direct = playground.scorer.score(image_tensor(Image.fromarray(array), 16)[None], texts)
    for key in ('dsd', 'attention', 'itm'):
        np.testing.assert_allclose([c[key] for c in answer['candidates']],
                                   direct[key][0].numpy(), rtol=1e-5, atol=1e-6)
    dsd = direct['dsd'][0].numpy()
    assert answer['best'] == int(np.argmax(dsd))
    assert answer['timesteps'] == 2
    prefix = 'data:image/png;base64,'
    heat = Image.open(io.BytesIO(base64.b64decode(answer['heatmap'][len(prefix):])))
    assert heat.size == (320, 320)


def test_lora_weights_are_applied(tiny_pipeline, real, tmp_path):
    from image_text_matching.models.lora import add_lora, save_lora
    from image_text_matching.playground import build_playground
    trained = build_playground(tiny_pipeline, timesteps=2).scorer
    add_lora(trained.unet, 'cross_kv', rank=2)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in trained.unet.named_parameters():
            if 'lora_B' in name:
                param.copy_(torch.randn(param.shape, generator=generator))
    save_lora(trained.unet, tmp_path / 'lora')
    playground = build_playground(tiny_pipeline, lora=str(tmp_path / 'lora'), timesteps=2)
    assert playground.model_name == 'sd + LoRA lora'
    images = torch.stack([image_tensor(Image.fromarray(picture(16, 16, s)), 16) for s in (0, 1)])
    texts = ['a red square', 'a flag']
    with torch.no_grad():
        got = playground.scorer.score(images, texts)
        want = trained.score(images, texts)
        plain = real.playground.scorer.score(images, texts)
    for key in ('dsd', 'attention', 'itm'):
        torch.testing.assert_close(got[key], want[key])
        assert (got[key] - plain[key]).abs().max() > 1e-3  # the adapters do change the scores


# ----------------------------------------------------------------------------- the browser
def _browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        pytest.skip(f'headless Chromium is not installed ({", ".join(missing)} missing): install '
                    f"Debian's packages with `apt-get install -y chromium chromium-driver` to run "
                    f'the playground page test')
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                 '--disable-extensions', '--window-size=1000,1400'):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def test_page_in_headless_chromium(real, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    good = tmp_path / 'flag.png'
    Image.fromarray(picture(24, 24)).save(good)
    fake_png = tmp_path / 'notes.png'
    fake_png.write_text('these are notes, not a picture\n')
    driver = _browser()
    try:
        driver.get(real.url)
        WebDriverWait(driver, 20).until(
            lambda d: d.find_element(By.ID, 'model-info').text.startswith('Model: sd'))
        driver.find_element(By.ID, 'images').send_keys(str(good))
        driver.find_element(By.ID, 'captions').send_keys('a red square\na blue circle')
        driver.find_element(By.ID, 'score').click()
        WebDriverWait(driver, 60).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, '#scores tbody tr')) == 2
            or d.find_element(By.ID, 'error').is_displayed())
        assert not driver.find_element(By.ID, 'error').is_displayed()
        rows = driver.find_elements(By.CSS_SELECTOR, '#scores tbody tr')
        assert [r.find_elements(By.TAG_NAME, 'td')[1].text for r in rows] == [
            'a red square', 'a blue circle']
        for row in rows:
            values = [float(td.text) for td in row.find_elements(By.CSS_SELECTOR, 'td.num')]
            assert len(values) == 3 and all(np.isfinite(values))
        assert len(driver.find_elements(By.CSS_SELECTOR, '#scores tbody tr.best')) == 1
        image = driver.find_element(By.ID, 'heatmap')
        WebDriverWait(driver, 10).until(lambda d: d.execute_script(
            'return arguments[0].complete && arguments[0].naturalWidth', image) == 320)
        # a text file renamed .png: the server's sentence on the page
        files = driver.find_element(By.ID, 'images')
        driver.execute_script('arguments[0].value = "";', files)
        files.send_keys(str(fake_png))
        driver.find_element(By.ID, 'score').click()
        error = driver.find_element(By.ID, 'error')
        WebDriverWait(driver, 20).until(lambda d: error.is_displayed())
        assert error.text == ("'notes.png' is not an image this server can read (31 bytes that "
                              "are not PNG, JPEG, GIF, BMP or WebP); upload a picture file.")
        assert not driver.find_element(By.ID, 'results').is_displayed()
    finally:
        driver.quit()


# ----------------------------------------------------------------------------- the tool
def test_tool_checks_paths_before_loading(tools_kit, tmp_path, capsys):
    tool = tools_kit.load('itm_playground')
    missing = str(tmp_path / 'nope')
    assert tool.main([missing]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tools/itm_playground.py: error: PIPELINE '{missing}' is not a folder")
    assert err.count('\n') == 1
    (tmp_path / 'half' / 'unet').mkdir(parents=True)
    assert tool.main([str(tmp_path / 'half')]) == 2
    assert ('lacks text_encoder/, tokenizer/, scheduler/ (it has unet)'
            in capsys.readouterr().err)
    with pytest.raises(SystemExit) as exit_info:
        tool.main([missing, '--timesteps', '0'])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == ('tools/itm_playground.py: error: --timesteps 0: use at '
                                       'least 1; see tools/itm_playground.py --help\n')


def test_tool_reports_a_bad_lora_and_a_busy_port(tools_kit, tiny_pipeline, tmp_path, capsys):
    tool = tools_kit.load('itm_playground')
    assert tool.main([tiny_pipeline, '--lora', str(tmp_path / 'lora')]) == 2
    assert f"--lora '{tmp_path / 'lora'}' does not exist" in capsys.readouterr().err
    (tmp_path / 'lora').mkdir()
    assert tool.main([tiny_pipeline, '--lora', str(tmp_path / 'lora'), '--device', 'cpu']) == 1
    err = capsys.readouterr().err.splitlines()[-1]  # the LoRA loader's paragraph, one line
    assert err.startswith(f"tools/itm_playground.py: error: --lora '{tmp_path / 'lora'}': ")
    assert 'pytorch_lora_weights.safetensors' in err
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert tool.main([tiny_pipeline, '--port', str(port), '--timesteps', '2',
                          '--device', 'cpu']) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(f'tools/itm_playground.py: error: Could not listen on 127.0.0.1:{port}')


def test_chromium_skip_reason_names_the_packages(monkeypatch):
    monkeypatch.setattr(os.path, 'exists', lambda p: False)
    with pytest.raises(pytest.skip.Exception) as skip:
        _browser()
    assert 'apt-get install -y chromium chromium-driver' in str(skip.value)
