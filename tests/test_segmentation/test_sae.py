"""Sparse autoencoders: hand-computed forwards/losses, decoder constraint, AuxK, resampling,
normalisation, checkpoints and resume, synthetic dictionary recovery, metrics vs numpy."""
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segmentation.sae import (ReluSAE, SAECheckpointError, SAEConfigError, SAEStats, TopKSAE,
                              evaluate_sae, feature_density_histogram, geometric_median,
                              load_sae, plot_feature_density, reconstruction_metrics, save_sae,
                              sparsity_metrics, train_sae)


def _set(sae, **tensors):
    with torch.no_grad():
        for name, value in tensors.items():
            module, attr = name.rsplit('.', 1) if '.' in name else (None, name)
            target = getattr(sae, module) if module else sae
            getattr(target, attr).copy_(torch.as_tensor(value, dtype=torch.float32))


def _f(t):
    return float(t.detach())


def _np(t):
    return t.detach().double().numpy()


def test_reference_forward_and_loss_by_hand():
    torch.manual_seed(0)
    sae = ReluSAE(3, 4)  # seed defaults: no normalisation, coefficient 0.001
    w_enc = np.array([[1., 0, 0], [0, 1, 0], [0, 0, 1], [1, -1, 0.5]])
    w_dec = np.array([[2., 0, 0, 1], [0, 1, 0, 1], [0, 0, 3, 0]])  # columns not unit-norm
    b_enc, b_dec = np.array([0.1, -0.2, 0., -5.]), np.array([0.5, 0., -0.5])
    _set(sae, **{'encoder.weight': w_enc, 'encoder.bias': b_enc, 'decoder.weight': w_dec,
                 'decoder.bias': b_dec})
    x = np.array([[1., 2, -1], [0.5, -1, 2]])
    h = np.maximum(x @ w_enc.T + b_enc, 0)
    x_hat = h @ (w_dec / np.linalg.norm(w_dec, axis=0)).T + b_dec
    mse = ((x_hat - x) ** 2).mean()
    sparsity = 0.001 * np.abs(h).sum(1).mean() / 3
    xt = torch.tensor(x, dtype=torch.float32)
    out_hat, out_h = sae(xt)
    np.testing.assert_allclose(_np(out_h), h, rtol=1e-6)
    np.testing.assert_allclose(_np(out_hat), x_hat, rtol=1e-5, atol=1e-6)
    loss = sae.loss(xt, step=0)
    np.testing.assert_allclose(_f(loss['mse']), mse, rtol=1e-5)
    np.testing.assert_allclose(_f(loss['sparsity']), sparsity, rtol=1e-5)
    np.testing.assert_allclose(_f(loss['loss']), mse + sparsity, rtol=1e-5)
    assert _f(loss['l0']) == (h > 0).sum(1).mean()
    # orthogonal decoder init: W_dec^T W_dec = I (d_sae <= d_in)
    fresh = ReluSAE(8, 5)
    np.testing.assert_allclose(_np(fresh.decoder.weight.t() @ fresh.decoder.weight), np.eye(5),
                               atol=1e-5)


def test_anthropic_forward_loss_warmup_and_normalisation_by_hand():
    torch.manual_seed(0)
    sae = ReluSAE(2, 3, variant='anthropic', l1_coefficient=0.5, sparsity_warmup_steps=100,
                  b_dec_init='mean')
    # init: W_dec columns of norm 0.1, W_enc = W_dec^T
    np.testing.assert_allclose(_np(sae.decoder.weight.norm(dim=0)), [0.1] * 3, rtol=1e-5)
    assert torch.equal(sae.encoder.weight, sae.decoder.weight.t())
    sample = torch.tensor([[3., 0], [0, 4], [3, 4], [0, 0]])
    sae.init_from_sample(sample)
    scale = np.sqrt(2 / ((9 + 16 + 25 + 0) / 4))  # mean ||x||^2 = 12.5 -> d_in = 2
    np.testing.assert_allclose(float(sae.act_scale), scale, rtol=1e-6)
    np.testing.assert_allclose(_np(sae.decoder.bias), _np(sample).mean(0) * scale, rtol=1e-6)
    w_enc = np.array([[1., 0], [0, 1], [1, 1]])
    w_dec = np.array([[1., 0, 0.6], [0, 1, 0.8]])
    b_enc, b_dec = np.array([0., 0.1, -0.3]), np.array([0.2, -0.1])
    _set(sae, **{'encoder.weight': w_enc, 'encoder.bias': b_enc, 'decoder.weight': w_dec,
                 'decoder.bias': b_dec})
    x = np.array([[1., 2], [-1, 0.5], [2, -3]])
    xn = x * scale
    h = np.maximum((xn - b_dec) @ w_enc.T + b_enc, 0)
    x_hat_n = h @ w_dec.T + b_dec
    mse = ((x_hat_n - xn) ** 2).sum(1).mean()
    l1 = np.abs(h).sum(1).mean()
    xt = torch.tensor(x, dtype=torch.float32)
    out_hat, out_h = sae(xt)
    np.testing.assert_allclose(_np(out_h), h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(out_hat), x_hat_n / scale, rtol=1e-5, atol=1e-6)
    for step, warm in ((0, 0.0), (50, 0.5), (100, 1.0), (1000, 1.0)):
        loss = sae.loss(xt, step)
        np.testing.assert_allclose(_f(loss['mse']), mse, rtol=1e-5)
        np.testing.assert_allclose(_f(loss['sparsity']), 0.5 * warm * l1, rtol=1e-5, atol=1e-9)


def test_topk_exactly_k_nonzeros_and_loss_by_hand():
    torch.manual_seed(0)
    sae = TopKSAE(4, 6, k=2, normalize_activations='none', pre_bias_init='zeros')
    # tied init with unit columns
    np.testing.assert_allclose(_np(sae.decoder.weight.norm(dim=0)), np.ones(6), rtol=1e-5)
    np.testing.assert_allclose(
        _np(sae.decoder.weight),
        _np(sae.encoder.weight.t() / sae.encoder.weight.t().norm(dim=0, keepdim=True)), rtol=1e-5)
    sae.init_from_sample(torch.randn(10, 4))
    x = torch.randn(50, 4)
    _set(sae, **{'encoder.bias': torch.full((6, ), 10.0)})  # all pre-activations positive
    h = sae.encode(x)
    assert ((h != 0).sum(1) == 2).all()
    pre = _np(sae.encoder(x - sae.pre_bias))
    top = np.argsort(-pre, axis=1)[:, :2]
    expected = np.zeros_like(pre)
    np.put_along_axis(expected, top, np.take_along_axis(pre, top, 1), 1)
    np.testing.assert_allclose(_np(h), expected, rtol=1e-6)
    # negative pre-activations are cut by the ReLU: at most k nonzeros
    _set(sae, **{'encoder.bias': torch.full((6, ), -100.0)})
    assert int((sae.encode(x) != 0).sum()) == 0
    _set(sae, **{'encoder.bias': torch.zeros(6), 'pre_bias': [0.5, -0.5, 0, 1]})
    xn = _np(x)
    hh = _np(sae.encode(x))
    x_hat = hh @ _np(sae.decoder.weight).T + np.array([0.5, -0.5, 0, 1])
    loss = sae.loss(x)
    np.testing.assert_allclose(_f(loss['mse']), ((x_hat - xn) ** 2).sum() / (xn ** 2).sum(),
                               rtol=1e-5)
    assert _f(loss['auxk']) == 0.0 and _f(loss['loss']) == pytest.approx(_f(loss['mse']))


def test_auxk_uses_only_dead_latents():
    torch.manual_seed(1)
    sae = TopKSAE(4, 8, k=2, auxk=2, auxk_coef=0.25, dead_steps_threshold=3,
                  normalize_activations='none', pre_bias_init='mean')
    x = torch.randn(32, 4)
    sae.init_from_sample(x)
    dead = torch.tensor([False, True, False, True, True, False, False, False])
    sae.steps_since_fired.copy_(torch.where(dead, 4, 3))  # > 3 steps silent = dead
    assert torch.equal(sae.dead_mask(), dead)
    sae.eval()
    loss = sae.loss(x)
    pre = _np(sae.encoder(x - sae.pre_bias))
    xn = _np(x)
    x_hat = _np(sae(x)[0])
    e = xn - x_hat
    masked = np.where(_np(dead.double()) > 0, pre, -np.inf)
    top = np.argsort(-masked, axis=1)[:, :2]
    z = np.zeros_like(pre)
    np.put_along_axis(z, top, np.maximum(np.take_along_axis(pre, top, 1), 0), 1)
    assert (z[:, ~dead.numpy()] == 0).all()
    e_hat = z @ _np(sae.decoder.weight).T
    auxk = ((e_hat - e) ** 2).sum() / (e ** 2).sum()
    np.testing.assert_allclose(_f(loss['auxk']), auxk, rtol=1e-5)
    np.testing.assert_allclose(_f(loss['loss']), _f(loss['mse']) + 0.25 * auxk, rtol=1e-5)
    # gradients of the AuxK term reach the encoder rows of dead latents only
    sae.zero_grad()
    loss['auxk'].backward()
    grad_rows = sae.encoder.weight.grad.abs().sum(1)
    assert (grad_rows[~dead] == 0).all() and (grad_rows[dead] > 0).any()
    # training mode advances the counters after using them
    sae.train()
    sae.tokens_since_fired.fill_(100)
    before = sae.steps_since_fired.clone()
    h = sae.encode(x)
    sae.loss(x)
    fired = (h > 0).any(0)
    assert 0 < int(fired.sum()) < 8
    assert torch.equal(sae.steps_since_fired, torch.where(fired, 0, before + 1))
    assert torch.equal(sae.tokens_since_fired, torch.where(fired, 0, 100 + 32))


@pytest.mark.parametrize('make', [
    lambda: ReluSAE(6, 10, variant='anthropic', sparsity_warmup_steps=0),
    lambda: TopKSAE(6, 10, k=3),
])
def test_unit_norm_decoder_after_optimizer_steps(make):
    torch.manual_seed(0)
    sae = make()
    x = torch.randn(64, 6) * 5 + 1
    sae.init_from_sample(x)
    opt = torch.optim.AdamW(sae.parameters(), lr=0.05)
    for _ in range(5):
        opt.zero_grad()
        sae.loss(x, 10)['loss'].backward()
        sae.before_optimizer_step()
        w, g = sae.decoder.weight, sae.decoder.weight.grad
        np.testing.assert_allclose(_np((w / w.norm(dim=0)) * g).sum(0), 0, atol=1e-5)
        opt.step()
        assert not torch.allclose(sae.decoder.weight.norm(dim=0), torch.ones(10), atol=1e-4)
        sae.after_optimizer_step()
        np.testing.assert_allclose(_np(sae.decoder.weight.norm(dim=0)), 1, atol=1e-5)


def test_reference_variant_has_unit_columns_by_reparameterisation():
    sae = ReluSAE(6, 10)
    with torch.no_grad():
        sae.decoder.weight.mul_(torch.linspace(0.5, 3, 10))
    np.testing.assert_allclose(_np(sae.decoder_directions().norm(dim=0)), 1, atol=1e-6)
    before = sae.decoder.weight.clone()
    sae.after_optimizer_step()  # the reference keeps raw weights; forward normalises
    assert torch.equal(before, sae.decoder.weight)


def test_normalisation_round_trip_and_scale_invariance():
    torch.manual_seed(0)
    x = torch.randn(200, 8) * 7 + 3
    a = TopKSAE(8, 16, k=4)
    a.init_from_sample(x)
    np.testing.assert_allclose(float((x * a.act_scale).pow(2).sum(1).mean()), 8, rtol=1e-5)
    assert 'act_scale' in a.state_dict()
    # the same SAE fitted on 10x the data gives the same latents and 10x the reconstruction
    b = TopKSAE(8, 16, k=4)
    b.load_state_dict(a.state_dict())
    b.init_from_sample(10 * x)
    np.testing.assert_allclose(float(b.act_scale), float(a.act_scale) / 10, rtol=1e-5)
    torch.testing.assert_close(b.pre_bias, a.pre_bias, rtol=1e-4, atol=1e-5)
    xa, ha = a(x)
    xb, hb = b(10 * x)
    torch.testing.assert_close(hb, ha, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(xb, 10 * xa, rtol=1e-4, atol=1e-3)
    # decode undoes the scale applied in encode
    torch.testing.assert_close(a.decode(ha) * a.act_scale, a._decode_n(ha))
    with pytest.raises(SAEConfigError, match=r"activation scale was never estimated.*"
                                             r"init_from_sample"):
        TopKSAE(8, 16, k=4).encode(x)


def test_geometric_median_is_robust_and_matches_weiszfeld_fixed_point():
    pts = torch.tensor([[0., 0], [1, 0], [0, 1], [100, 100]])
    gm = geometric_median(pts)
    # optimality: the unit vectors to the points sum to ~0
    u = (pts.double() - gm) / (pts.double() - gm).norm(dim=1, keepdim=True)
    assert float(u.sum(0).norm()) < 1e-4
    assert float(gm.norm()) < 1.0 < float(pts.mean(0).norm())


def test_resampling_reinitialises_exactly_the_dead_latents_and_their_adam_state():
    torch.manual_seed(0)
    sae = ReluSAE(5, 8, variant='anthropic', sparsity_warmup_steps=0)
    x = torch.randn(128, 5) * 2
    sae.init_from_sample(x)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        sae.loss(x, 0)['loss'].backward()
        opt.step()
        sae.after_optimizer_step()
    dead = torch.zeros(8, dtype=torch.bool)
    dead[[1, 6]] = True
    sae.steps_since_fired.copy_(torch.where(dead, 50, 2))
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    moments = {n: {k: v.clone() for k, v in opt.state[p].items()}
               for n, p in sae.named_parameters()}
    alive_norm = _f(sae.encoder.weight[~dead].norm(dim=1).mean())
    idx = sae.resample_dead(x, opt, dead, generator=torch.Generator().manual_seed(0))
    assert idx.tolist() == [1, 6]
    after = sae.state_dict()
    alive = ~dead
    assert torch.equal(after['encoder.weight'][alive], before['encoder.weight'][alive])
    assert torch.equal(after['encoder.bias'][alive], before['encoder.bias'][alive])
    assert torch.equal(after['decoder.weight'][:, alive], before['decoder.weight'][:, alive])
    assert torch.equal(after['decoder.bias'], before['decoder.bias'])
    assert (after['encoder.bias'][dead] == 0).all()
    # each new decoder column is a normalised (input - b_dec) of the pool; encoder row = 0.2 x
    # mean alive encoder norm along it
    cand = x * sae.act_scale - sae.decoder.bias
    cand = cand / cand.norm(dim=1, keepdim=True)
    for j in (1, 6):
        col = after['decoder.weight'][:, j]
        assert _f((cand - col).norm(dim=1).min()) < 1e-5
        torch.testing.assert_close(after['encoder.weight'][j], col * 0.2 * alive_norm)
    assert (sae.steps_since_fired[dead] == 0).all()
    assert torch.equal(sae.steps_since_fired[alive], torch.full((6, ), 2))
    for name, index_dead, index_alive in (('encoder.weight', (dead, ), (alive, )),
                                          ('encoder.bias', (dead, ), (alive, )),
                                          ('decoder.weight', (slice(None), dead),
                                           (slice(None), alive))):
        param = dict(sae.named_parameters())[name]
        for key in ('exp_avg', 'exp_avg_sq'):
            state = opt.state[param][key]
            assert (state[index_dead] == 0).all()
            assert torch.equal(state[index_alive], moments[name][key][index_alive])
            assert (moments[name][key][index_dead] != 0).any()


def test_train_sae_resamples_dead_latents():
    torch.manual_seed(0)
    sae = ReluSAE(5, 8, variant='anthropic', sparsity_warmup_steps=0)
    with torch.no_grad():
        sae.encoder.bias[[2, 5]] = -1e3  # these can never fire
    x = torch.randn(512, 5)
    res = train_sae(sae, list(x.split(64)), steps=8, lr=1e-4, resample_steps=4, log_interval=4)
    assert res['step'] == 8 and res['tokens'] == 512 and res['tokens_per_s'] > 0
    assert [r['step'] for r in res['history']] == [4, 8]
    assert _f(sae.encoder.bias[2]) > -1 and _f(sae.encoder.bias[5]) > -1
    with pytest.raises(SAEConfigError, match='resampling is for ReLU SAEs'):
        train_sae(TopKSAE(5, 8, k=2), [x], steps=1, resample_steps=4)


def _sparse_data(n, d=16, m=32, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    dictionary = torch.randn(d, m, generator=g)
    dictionary /= dictionary.norm(dim=0, keepdim=True)
    idx = torch.rand(n, m, generator=g).argsort(1)[:, :k]
    codes = torch.zeros(n, m).scatter(1, idx, torch.rand(n, k, generator=g) + 0.5)
    return dictionary, codes @ dictionary.t()


def test_topk_recovers_a_known_sparse_dictionary():
    # 32 unit atoms in 24 dims, 3 active per token; seeds 0-2 give FVE 0.95-0.96, 29-31 atoms
    dictionary, x = _sparse_data(20000, d=24)
    torch.manual_seed(0)
    sae = TopKSAE(24, 32, k=3, dead_steps_threshold=50)
    train_sae(sae, list(x[:16000].split(256)), steps=1500, lr=3e-3, log_interval=0)
    m = evaluate_sae(sae, x[16000:].split(1000))  # held-out tokens
    assert m['fve'] > 0.9 and m['l0'] <= 3
    cos = (F.normalize(sae.decoder.weight, dim=0).t() @ dictionary).max(0).values
    assert int((cos > 0.9).sum()) >= 27  # of 32 atoms found (cosine > 0.9)


def test_anthropic_relu_sae_reaches_high_fve_with_sparse_codes():
    _, x = _sparse_data(12000, seed=1)
    torch.manual_seed(0)
    sae = ReluSAE(16, 32, variant='anthropic', l1_coefficient=0.3, sparsity_warmup_steps=100)
    train_sae(sae, list(x[:10000].split(256)), steps=1200, lr=3e-3, log_interval=0)
    m = evaluate_sae(sae, [x[10000:]])
    assert m['fve'] > 0.9 and m['l0'] < 16


def test_metrics_match_numpy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 5, generator=g) * 2 + 1
    x_hat = x + 0.3 * torch.randn(300, 5, generator=g)
    h = torch.relu(torch.randn(300, 7, generator=g) - 1.0)
    h[:, 2] = 0  # dead
    h[:, 4] = torch.rand(300, generator=g) + 0.1  # dense: always on
    stats = SAEStats(5, 7)
    for a, b, c in zip(x.split(77), x_hat.split(77), h.split(77)):
        stats.update(a, b, c)
    out = stats.compute(dense_threshold=0.5)
    xn, rn, hn = _np(x), _np(x - x_hat), _np(h)
    np.testing.assert_allclose(out['mse'], (rn ** 2).sum(1).mean(), rtol=1e-10)
    np.testing.assert_allclose(out['nmse'], (rn ** 2).sum(1).mean() / (xn ** 2).sum(1).mean(),
                               rtol=1e-10)
    np.testing.assert_allclose(out['fve'], 1 - rn.var(0).sum() / xn.var(0).sum(), rtol=1e-9)
    np.testing.assert_allclose(out['l0'], (hn != 0).sum(1).mean(), rtol=1e-12)
    np.testing.assert_allclose(out['l1'], np.abs(hn).sum(1).mean(), rtol=1e-10)
    freq = (hn > 0).mean(0)
    np.testing.assert_allclose(out['frequency'].numpy(), freq, rtol=1e-12)
    assert out['dead'].tolist() == [2]
    assert out['dense'].tolist() == np.nonzero(freq > 0.5)[0].tolist() and 4 in out['dense']
    assert out['dead_fraction'] == pytest.approx(1 / 7)
    rec = reconstruction_metrics(x, x_hat)
    assert rec['mse'] == pytest.approx(out['mse']) and rec['fve'] == pytest.approx(out['fve'])
    sp = sparsity_metrics(h)
    assert sp['l0'] == pytest.approx(out['l0']) and sp['l1'] == pytest.approx(out['l1'])
    hist = feature_density_histogram(out['frequency'], bins=4, range_log10=(-3, 0))
    counts, edges = np.histogram(np.log10(freq[freq > 0]), bins=4, range=(-3, 0))
    assert hist['counts'].tolist() == counts.tolist() and hist['n_dead'] == 1
    np.testing.assert_allclose(hist['edges'], edges)
    with pytest.raises(SAEConfigError, match=r'expected x and x_hat \[N, 5\] and h \[N, 7\]'):
        stats.update(x, x_hat, h[:, :3])
    with pytest.raises(SAEConfigError, match=r'expected a 1-d array of firing frequencies'):
        feature_density_histogram(np.array([0.5, 2.0]))


def test_plot_feature_density_writes_png(tmp_path):
    import matplotlib.pyplot as plt
    fig = plot_feature_density(torch.tensor([0.0, 1e-3, 1e-2, 0.2]), tmp_path / 'density.png')
    with open(tmp_path / 'density.png', 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert '1 dead' in fig.axes[0].get_title()
    plt.close(fig)


def test_state_dict_and_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(64, 6) * 3
    for make in (lambda: ReluSAE(6, 12), lambda: ReluSAE(6, 12, variant='anthropic'),
                 lambda: TopKSAE(6, 12, k=3)):
        sae = make()
        sae.init_from_sample(x)
        sae.train()
        sae.loss(x)  # counters move
        path = save_sae(sae, tmp_path / 'sae.safetensors', step=3, tokens=64)
        other = make()
        meta = load_sae(path, other)
        assert meta['step'] == 3 and meta['tokens'] == 64
        for key, value in sae.state_dict().items():
            assert torch.equal(other.state_dict()[key], value), key
        torch.testing.assert_close(other(x)[0], sae(x)[0])
        fresh = make()
        fresh.load_state_dict(sae.state_dict())
        torch.testing.assert_close(fresh(x)[1], sae(x)[1])
    with pytest.raises(SAECheckpointError, match=r'does not fit this TopKSAE.*decoder.weight: '
                                                 r'file \(6, 12\) vs SAE \(6, 9\)'):
        load_sae(tmp_path / 'sae.safetensors', TopKSAE(6, 9, k=3))
    with pytest.raises(SAECheckpointError, match=r'does not exist; expected a \.safetensors'):
        load_sae(tmp_path / 'missing.safetensors', TopKSAE(6, 12, k=3))


def test_resume_gives_the_same_weights_as_a_straight_run(tmp_path):
    x = torch.randn(12 * 32, 6, generator=torch.Generator().manual_seed(3)) * 2
    batches = list(x.split(32))

    def run(steps, work_dir):
        torch.manual_seed(0)
        sae = ReluSAE(6, 12, variant='anthropic', sparsity_warmup_steps=5)
        with torch.no_grad():
            sae.encoder.bias[[0, 7]] = -1e3  # dead: resampled at step 4 from batches 1-4
        return sae, train_sae(sae, batches, steps=steps, work_dir=work_dir,
                              checkpoint_interval=3, resample_steps=4, log_interval=0,
                              init_tokens=64)

    straight, _ = run(10, None)
    assert _f(straight.encoder.bias[0]) > -1  # it was resampled
    first, res = run(3, str(tmp_path))  # stops between resamplings: the pool must be re-read
    assert res['checkpoint'].endswith('sae_step3.safetensors')
    with open(osp.join(tmp_path, 'last_checkpoint')) as f:
        assert f.read().strip() == 'sae_step3.safetensors'
    resumed, res = run(10, str(tmp_path))
    assert res['step'] == 10 and res['tokens'] == 10 * 32
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_bad_options_and_inputs_raise_one_paragraph_errors():
    with pytest.raises(SAEConfigError, match=r"variant='antropic' is not known; expected one "
                                             r"of \('reference', 'anthropic'\)"):
        ReluSAE(4, 8, variant='antropic')
    with pytest.raises(SAEConfigError, match=r"normalize_activations='layer_norm' is not known"):
        TopKSAE(4, 8, k=2, normalize_activations='layer_norm')
    with pytest.raises(SAEConfigError, match=r'k=9 is not an integer in \[1, d_sae=8\]'):
        TopKSAE(4, 8, k=9)
    with pytest.raises(SAEConfigError, match=r'd_sae=0 is not a positive integer'):
        ReluSAE(4, 0)
    sae = ReluSAE(4, 8)
    with pytest.raises(SAEConfigError, match=r'x has shape \(2, 4, 3\); expected tokens \[N, 4\].*'
                                             r'permute\(0, 2, 3, 1\)'):
        sae.encode(torch.zeros(2, 4, 3))
    with pytest.raises(SAEConfigError, match=r'latents have shape \(2, 5\); expected \[N, 8\]'):
        sae.decode(torch.zeros(2, 5))
    with pytest.raises(SAEConfigError, match='token_batches yielded no batch'):
        train_sae(sae, [], steps=1)


def test_registered_in_mmengine_models():
    from mmengine.registry import MODELS
    sae = MODELS.build(dict(type='TopKSAE', d_in=4, d_sae=8, k=2))
    assert isinstance(sae, TopKSAE) and sae.k == 2
    assert isinstance(MODELS.build(dict(type='ReluSAE', d_in=4, d_sae=8)), ReluSAE)
