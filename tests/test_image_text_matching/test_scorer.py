"""DSDScorer on the tiny random SD pipeline: the timestep grid and common noise, batched scores
equal to the reference's loop and to a hand computation (ITM, DSD, attention, v-prediction),
per-sample vs compatibility reduction, gradients (with checkpointing), heat maps, pixel-space
pipelines in the loader, option errors."""
import json
import math
import os
import shutil

import pytest
import torch

from common.teachers import TeacherConfigError, TeacherLoadError, load_diffusion_components
from image_text_matching.models import DSDScorer, latent_noise, shared_noise, timestep_grid
from tests.helpers.tiny_models import save_sd_pipeline, write_char_clip_tokenizer

TEXTS = ['cat', 'dog', 'ox']
STEPS = [10, 500, 900]
TINY_LAYERS = ['down_blocks.0.attentions.0.transformer_blocks.0.attn2',
               'mid_block.attentions.0.transformer_blocks.0.attn2',
               'up_blocks.1.attentions.0.transformer_blocks.0.attn2',
               'up_blocks.1.attentions.1.transformer_blocks.0.attn2']


@pytest.fixture(scope='module')
def sd_dir(tmp_path_factory):
    return save_sd_pipeline(str(tmp_path_factory.mktemp('itm_scorer') / 'sd'))


@pytest.fixture(scope='module')
def components(sd_dir):
    return load_diffusion_components(sd_dir)


@pytest.fixture(scope='module')
def scorer(components):
    # grid [10, 510]; max_batch=4 splits every call into several UNet calls
    return DSDScorer(components=components, num_timesteps=2, max_batch=4)


def _images(n=3, size=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=gen) * 2 - 1


# ---------------------------------------------------------------------- grid and noise
def test_timestep_grid_is_the_references():
    assert timestep_grid(30) == [
        10, 43, 76, 109, 142, 175, 208, 241, 274, 307, 340, 373, 406, 439, 472, 505, 538, 571,
        604, 637, 670, 703, 736, 769, 802, 835, 868, 901, 934, 967]
    assert timestep_grid(10) == [10, 110, 210, 310, 410, 510, 610, 710, 810, 910]
    assert timestep_grid(40)[-1] == 985 and len(timestep_grid(40)) == 40
    assert len(timestep_grid(200)) == 196  # stride 5: as the reference, not 200
    with pytest.raises(ValueError, match='is empty'):
        timestep_grid(0)


def test_shared_noise_is_a_function_of_seed_timestep_and_shape():
    a = shared_noise(0, 10, (4, 4, 4))
    assert a.dtype == torch.float32 and a.shape == (4, 4, 4)
    assert torch.equal(a, shared_noise(0, 10, (4, 4, 4)))
    assert not torch.allclose(a, shared_noise(0, 43, (4, 4, 4)))
    assert not torch.allclose(a, shared_noise(1, 10, (4, 4, 4)))
    assert not torch.allclose(a, latent_noise(0, (4, 4, 4)))
    assert not torch.allclose(shared_noise(None, 10, (4, 4, 4)), shared_noise(None, 10, (4, 4, 4)))
    with pytest.raises(ValueError, match='non-negative int'):
        shared_noise(-1, 10, (2, ))


# ---------------------------------------------------------------------- batched vs loop
@pytest.mark.parametrize('n_img, texts', [(1, TEXTS), (3, TEXTS[:1])])
def test_batched_scores_equal_the_reference_loop(scorer, n_img, texts):
    images = _images(n_img)
    with torch.no_grad():
        batched = scorer.score(images, texts)
        looped = scorer.reference_score(images, texts)
    for key in ('attention', 'itm', 'dsd'):
        assert batched[key].shape == (n_img, len(texts))
        torch.testing.assert_close(batched[key], looped[key], rtol=0, atol=1e-5)


def test_a_pairs_score_does_not_depend_on_the_other_candidates(scorer):
    images = _images(2)
    with torch.no_grad():
        full = scorer.score(images, TEXTS)
        alone = scorer.score(images[1:2], TEXTS[2:3])
        scorer.max_batch = 32
        try:
            one_call = scorer.score(images, TEXTS)
        finally:
            scorer.max_batch = 4
    for key in full:
        torch.testing.assert_close(alone[key][0, 0], full[key][1, 2], rtol=0, atol=1e-5)
        torch.testing.assert_close(one_call[key], full[key], rtol=0, atol=1e-5)
    assert (full['attention'][0] - full['attention'][0, 0]).abs().max() > 1e-4


def test_batch_mean_compat_gives_every_candidate_the_same_attention_term(components, scorer):
    images = _images(2)
    compat = DSDScorer(components=components, num_timesteps=2, max_batch=4,
                       reduction='batch_mean_compat')  # shares the fixture's UNet
    with torch.no_grad():
        shared = compat.score(images, TEXTS)
    compat.capture.remove()
    with torch.no_grad():
        own = scorer.score(images, TEXTS)
        empty = scorer.score(images, [''])  # the unconditional rows' attention
    # the reference: mean over all rows of the call, conditional and unconditional halves
    n_img, n_txt = own['attention'].shape
    expected = (own['attention'].sum() + n_txt * empty['attention'].sum()) / (2 * n_img * n_txt)
    torch.testing.assert_close(shared['attention'], expected.expand(n_img, n_txt), rtol=0,
                               atol=1e-5)
    torch.testing.assert_close(shared['dsd'] - shared['attention'],
                               own['dsd'] - own['attention'], rtol=0, atol=1e-5)
    torch.testing.assert_close(shared['itm'], own['itm'], rtol=0, atol=1e-5)


# ---------------------------------------------------------------------- against a hand computation
def _hand_terms(parts, image, text, timesteps, seed, v_prediction=False):
    """(d_cond, d_uncond, attention) per timestep for one pair, from the raw diffusers parts:
    VAE posterior mean, DDPMScheduler.add_noise, the UNet's own call and the cross-attention
    logits recomputed from each layer's input and weights."""
    unet, vae, encoder, tok = parts.unet, parts.vae, parts.text_encoders[0], parts.tokenizers[0]
    sched = parts.noise_scheduler
    modules = dict(unet.named_modules())

    def embed(s):
        enc = tok([s], padding='max_length', max_length=tok.model_max_length, truncation=True,
                  return_tensors='pt')
        return encoder(enc.input_ids)[0], enc.attention_mask.bool()

    x0 = vae.encode(image[None]).latent_dist.mean * vae.config.scaling_factor
    cond, mask = embed(text)
    uncond, _ = embed('')
    d_cond, d_uncond, attention = [], [], []
    for t in timesteps:
        eps = shared_noise(seed, t, x0.shape[1:])[None]
        tt = torch.tensor([t])
        x_t = sched.add_noise(x0, eps, tt)
        seen = {}
        hooks = [modules[n].register_forward_pre_hook(
            lambda m, a, kw, n=n: seen.__setitem__(n, (a[0], kw['encoder_hidden_states'])),
            with_kwargs=True) for n in TINY_LAYERS]
        out_c = unet(x_t, tt, encoder_hidden_states=cond).sample
        for h in hooks:
            h.remove()
        out_u = unet(x_t, tt, encoder_hidden_states=uncond).sample
        if v_prediction:  # eps - eps_theta = sqrt(abar) (v - v_theta), v from diffusers
            v = sched.get_velocity(x0, eps, tt)
            scale = sched.alphas_cumprod[t].sqrt()
            d_cond.append(float(scale * (v - out_c).norm()))
            d_uncond.append(float(scale * (v - out_u).norm()))
        else:
            d_cond.append(float((eps - out_c).norm()))
            d_uncond.append(float((eps - out_u).norm()))
        lse = []
        for n in TINY_LAYERS:
            attn, (hidden, context) = modules[n], seen[n]
            q, k = attn.to_q(hidden).double(), attn.to_k(context).double()
            b, px, inner = q.shape
            hd = inner // attn.heads
            q = q.view(b, px, attn.heads, hd).transpose(1, 2)
            k = k.view(b, -1, attn.heads, hd).transpose(1, 2)
            logits = q @ k.transpose(-1, -2) / math.sqrt(hd)
            lse.append(float((logits.exp() * mask[:, None, None].double()).sum(-1).log().mean()))
        attention.append(sum(lse) / len(lse))
    return torch.tensor(d_cond), torch.tensor(d_uncond), torch.tensor(attention)


def test_itm_dsd_and_attention_equal_a_hand_computation(components):
    image = _images(1)[0]
    scorer = DSDScorer(components=components, latent='mean', noise_seed=7, max_batch=5)
    try:
        with torch.no_grad():
            got = scorer.score(image[None], ['dog', 'cat'], timesteps=STEPS)
            d_c, d_u, att = _hand_terms(components, image, 'cat', STEPS, seed=7)
            scorer.itm_unconditional_normalise = True
            normalised = scorer.score(image[None], ['cat'], timesteps=STEPS)
    finally:
        scorer.capture.remove()
    assert abs(float(got['itm'][0, 1]) - float(-d_c.mean())) < 1e-4
    assert abs(float(got['attention'][0, 1]) - float(att.mean())) < 1e-5
    assert abs(float(got['dsd'][0, 1]) - float(att.mean() + (d_u - d_c).mean())) < 1e-4
    assert abs(float(normalised['itm'][0, 0]) - float((d_u - d_c).mean())) < 1e-4


def test_v_prediction_is_compared_in_epsilon_space(sd_dir, tmp_path):
    folder = str(tmp_path / 'sd_v')
    shutil.copytree(sd_dir, folder)
    cfg_path = os.path.join(folder, 'scheduler', 'scheduler_config.json')
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg['prediction_type'] = 'v_prediction'
    with open(cfg_path, 'w') as f:
        json.dump(cfg, f)
    parts = load_diffusion_components(folder)
    scorer = DSDScorer(components=parts, latent='mean', noise_seed=3)
    assert scorer.prediction_type == 'v_prediction'
    image = _images(1)[0]
    with torch.no_grad():
        got = scorer.score(image[None], ['ox'], timesteps=[10, 700])
        d_c, d_u, att = _hand_terms(parts, image, 'ox', [10, 700], seed=3, v_prediction=True)
    assert abs(float(got['itm'][0, 0]) - float(-d_c.mean())) < 1e-4
    assert abs(float(got['dsd'][0, 0]) - float(att.mean() + (d_u - d_c).mean())) < 1e-4


def test_latent_sample_is_seeded_and_shared_by_images(scorer):
    images = _images(2)
    vae = scorer.vae
    with torch.no_grad():
        dist = vae.encode(images).latent_dist
        z = latent_noise(0, dist.mean.shape[1:])
        expected = (dist.mean + dist.std * z) * vae.config.scaling_factor
        torch.testing.assert_close(scorer.encode_images(images), expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(scorer.encode_images(images[1:]), expected[1:], rtol=0,
                                   atol=1e-6)
        assert not torch.allclose(scorer.encode_images(images, noise_seed=1), expected)
        scorer.image_size = (16, 16)  # resized (bilinear, antialiased) before the VAE
        try:
            small = scorer.encode_images(images)
        finally:
            scorer.image_size = None
        resized = torch.nn.functional.interpolate(images, size=(16, 16), mode='bilinear',
                                                  antialias=True)
        torch.testing.assert_close(small, scorer.encode_images(resized), rtol=0, atol=1e-6)
        assert small.shape == (2, 4, 8, 8)


# ---------------------------------------------------------------------- gradients
def test_gradients_reach_trainable_unet_parameters_with_and_without_checkpointing(components):
    images = _images(1)
    scorer = DSDScorer(components=components, num_timesteps=2, max_batch=3)
    weight = dict(scorer.unet.named_parameters())[TINY_LAYERS[-1].replace('attn2', 'attn2.to_k')
                                                  + '.weight']
    weight.requires_grad_(True)
    grads = {}
    try:
        for checkpointing in (False, True):
            scorer.unet.train()
            if checkpointing:
                scorer.unet.enable_gradient_checkpointing()
            for key in ('attention', 'dsd'):
                weight.grad = None
                out = scorer.score(images, TEXTS, timesteps=[300])
                (out[key][0] * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
                grads[key, checkpointing] = weight.grad.clone()
    finally:
        weight.requires_grad_(False)
        weight.grad = None
        scorer.unet.disable_gradient_checkpointing()
        scorer.unet.eval()
        scorer.capture.remove()
    for key in ('attention', 'dsd'):
        assert grads[key, False].abs().max() > 1e-6
        torch.testing.assert_close(grads[key, True], grads[key, False], rtol=1e-4, atol=1e-7)
    assert not torch.allclose(grads['attention', False], grads['dsd', False])
    assert all(not p.requires_grad for p in components.unet.parameters())


# ---------------------------------------------------------------------- heat maps
def test_attention_maps(scorer):
    image = _images(1, size=24)[0]
    maps = scorer.attention_maps(image, ['cat', '', 'ox'])
    assert maps.shape == (3, 24, 24)
    assert float(maps.min()) >= 0 and float(maps.max()) <= 1
    assert float(maps[1].abs().max()) == 0  # the empty text has no word token
    assert float(maps[0].min()) > 0 and not torch.allclose(maps[0], maps[2])
    # one layer, one timestep: the layer's own map upsampled bilinearly
    one = DSDScorer(components=scorer_components(scorer), layers=[TINY_LAYERS[0]],
                    latent='mean', num_timesteps=1)
    try:
        got = one.attention_maps(image, ['cat'], timesteps=[400])
        one.capture.record_maps = True
        with torch.no_grad():
            x0 = one.encode_images(image[None])
            emb, mask = one.encode_texts(['cat'])
            noise = shared_noise(0, 400, x0.shape[1:])[None]
            abar = one.alphas_cumprod[400]
            one.capture.set_token_mask(emb, mask)
            one.unet(abar.sqrt() * x0 + (1 - abar).sqrt() * noise, torch.tensor([400]),
                     encoder_hidden_states=emb)
            layer = one.capture.row_maps()[TINY_LAYERS[0]].view(1, 1, 12, 12)  # 24 px / VAE 2
    finally:
        one.capture.remove()
    expected = torch.nn.functional.interpolate(layer, size=(24, 24), mode='bilinear')[0]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def scorer_components(scorer):
    from common.teachers.loading import DiffusionComponents
    return DiffusionComponents(scorer.unet, scorer.noise_scheduler, scorer.vae,
                               (scorer.text_encoder, ), (scorer.tokenizer, ), scorer.source)


# ---------------------------------------------------------------------- pixel-space pipelines
def _save_text_pipeline(folder, in_channels, with_text_encoder=True):
    """A text-conditioned pipeline folder without vae/ (written as save_pretrained does)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(0)
    tokenizer = write_char_clip_tokenizer(os.path.join(folder, '_tok_src'))
    UNet2DConditionModel(
        sample_size=16, in_channels=in_channels, out_channels=in_channels, layers_per_block=1,
        block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=16,
        down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
        up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), attention_head_dim=4,
    ).save_pretrained(os.path.join(folder, 'unet'))
    DDPMScheduler().save_pretrained(os.path.join(folder, 'scheduler'))
    index = dict(_class_name='DiffusionPipeline', unet=['diffusers', 'UNet2DConditionModel'],
                 scheduler=['diffusers', 'DDPMScheduler'])
    if with_text_encoder:
        CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_attention_heads=2,
            num_hidden_layers=1, max_position_embeddings=8, bos_token_id=0, eos_token_id=1,
            pad_token_id=1)).save_pretrained(os.path.join(folder, 'text_encoder'))
        tokenizer.save_pretrained(os.path.join(folder, 'tokenizer'))
        index.update(text_encoder=['transformers', 'CLIPTextModel'],
                     tokenizer=['transformers', 'CLIPTokenizer'])
    with open(os.path.join(folder, 'model_index.json'), 'w') as f:
        json.dump(index, f)
    return folder


def test_pixel_space_text_pipeline_loads_and_scores(tmp_path):
    folder = _save_text_pipeline(str(tmp_path / 'pixel'), in_channels=3)
    parts = load_diffusion_components(folder)
    assert parts.vae is None and parts.is_text_conditioned
    scorer = DSDScorer(folder, num_timesteps=2, max_batch=3)
    images = _images(2, size=16)
    try:
        with torch.no_grad():
            assert torch.equal(scorer.encode_images(images), images)  # latent = image
            batched = scorer.score(images, ['ox', 'cat'])
            looped = scorer.reference_score(images, ['ox', 'cat'])
    finally:
        scorer.capture.remove()
    for key in batched:
        torch.testing.assert_close(batched[key], looped[key], rtol=0, atol=1e-5)


def test_loader_keeps_its_errors_for_latent_models(tmp_path):
    folder = _save_text_pipeline(str(tmp_path / 'latent'), in_channels=4)
    with pytest.raises(TeacherLoadError) as err:
        load_diffusion_components(folder)
    assert str(err.value) == (
        f'{folder}: a text-conditioned UNet needs vae/, text_encoder/ and tokenizer/ next to '
        f'unet/ (a Stable Diffusion pipeline folder). A pixel-space text-conditioned pipeline '
        f'(no vae/) is accepted only when the UNet takes images directly (in_channels 1 or 3); '
        f'this one has in_channels=4, text_encoder/: yes.')
    no_text = _save_text_pipeline(str(tmp_path / 'no_text'), in_channels=3,
                                  with_text_encoder=False)
    with pytest.raises(TeacherLoadError, match='in_channels=3, text_encoder/: no'):
        load_diffusion_components(no_text)


# ---------------------------------------------------------------------- options and registry
def test_option_and_input_errors(components, scorer):
    with pytest.raises(TeacherConfigError,
                       match=r"reduction='batch_mean' is not one of \('per_sample', "
                             r"'batch_mean_compat'\)"):
        DSDScorer(components=components, reduction='batch_mean')
    with pytest.raises(TeacherConfigError, match="latent='median' is not one of"):
        DSDScorer(components=components, latent='median')
    with pytest.raises(TeacherConfigError, match='exactly one of pretrained'):
        DSDScorer()
    with pytest.raises(TeacherConfigError, match=r'timestep_range=\(10, 1200\) must be'):
        DSDScorer(components=components, timestep_range=(10, 1200))
    with pytest.raises(TeacherConfigError, match=r'must be in \[-1, 1\], got values in \[0, 255\]'):
        scorer.score(torch.zeros(1, 3, 16, 16) + torch.tensor([0.0, 255.0]).repeat(8)[None, None,
                                                                                        None], TEXTS)
    with pytest.raises(TeacherConfigError, match='texts must be a non-empty list of strings'):
        scorer.score(_images(1), [])
    with pytest.raises(TeacherConfigError, match=r'timesteps \[1000\] are outside 0..999'):
        scorer.score(_images(1), TEXTS, timesteps=[1000])


def test_registry_builds_the_scorer(sd_dir):
    from mmengine.registry import MODELS
    built = MODELS.build(dict(type='DSDScorer', pretrained=sd_dir, num_timesteps=2,
                              dtype='float32'))
    assert isinstance(built, DSDScorer)
    assert built.timesteps == [10, 510]
    assert built.layers == TINY_LAYERS
