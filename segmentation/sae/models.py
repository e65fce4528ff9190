"""Sparse autoencoders (SAEs) for diffusion features: ReLU + L1 (two variants) and TopK + AuxK.

The one rule: an SAE works on tokens ``x [N, d_in]`` in the *input's* units, and everything it
learns lives in the *normalised* space ``x * act_scale``: ``encode`` multiplies by ``act_scale``
before the encoder, ``decode`` divides by it after the decoder, and ``loss`` reports its terms in
the normalised space (so one ``l1_coefficient`` fits features of any timestep). ``act_scale``,
the firing counters and the "initialised from a sample" flag are buffers: they travel in
``state_dict()``, so a saved SAE encodes exactly as it did in training.

Training protocol (``segmentation/sae/train.py`` follows it): call ``init_from_sample(sample)``
once (activation scale, and the pre-encoder bias where the variant has one); per step call
``loss(x, step)`` (in training mode it also advances the firing counters), ``backward``,
``before_optimizer_step()`` (removes the gradient component parallel to each decoder column where
the variant keeps unit-norm columns), ``optimizer.step()``, ``after_optimizer_step()``
(renormalises those columns).

Written here rather than taken from SAELens / dictionary_learning: see ``segmentation/README.md``
("Sparse autoencoders"): SAELens v6 imports TransformerLens and wandb at module import, keeps its
activation scale outside the SAE, and has no neuron resampling; dictionary_learning pins nnsight
0.3. Names follow SAELens where one exists (``l1_coefficient``, ``normalize_activations=
'expected_average_only_in'``, ``dead_feature_window``).
"""
import math

import torch
import torch.nn.functional as F
from mmengine.registry import MODELS
from torch import nn

NORMALIZATIONS = ('none', 'expected_average_only_in')


class SAEConfigError(ValueError):
    """An SAE option or input is not what the SAE expects."""


def geometric_median(points, iters=100, tol=1e-6):
    """Weiszfeld's algorithm: the point minimising the summed Euclidean distance to ``points``.

    ``points`` is ``[N, d]``; starts from the mean and stops when a step moves less than ``tol``
    (relative to the data's scale) or after ``iters`` steps.
    """
    points = points.double()
    guess = points.mean(0)
    scale = points.norm(dim=1).mean().clamp_min(1e-12)
    for _ in range(iters):
        dist = (points - guess).norm(dim=1).clamp_min(1e-12)
        weights = 1.0 / dist
        new = (weights[:, None] * points).sum(0) / weights.sum()
        moved = (new - guess).norm()
        guess = new
        if moved < tol * scale:
            break
    return guess


class _SAEBase(nn.Module):
    """Shared parts: input checks, activation normalisation, firing counters, decoder constraint."""

    #: subclasses set: does this SAE keep unit-norm decoder columns by renormalising after a step?
    constrain_decoder = False

    def __init__(self, d_in, d_sae, normalize_activations, dead_feature_window):
        super().__init__()
        name = type(self).__name__
        for key, value in (('d_in', d_in), ('d_sae', d_sae)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SAEConfigError(
                    f'{name}: {key}={value!r} is not a positive integer; expected the token '
                    f'width (d_in) and the number of latents (d_sae), e.g. {name}(d_in=512, '
                    'd_sae=5120). Fix the config.')
        if normalize_activations not in NORMALIZATIONS:
            raise SAEConfigError(
                f'{name}: normalize_activations={normalize_activations!r} is not known; expected '
                f'one of {NORMALIZATIONS} (\'expected_average_only_in\' rescales tokens so that '
                'mean ||x||^2 = d_in, as SAELens does). Fix the config.')
        self.d_in = d_in
        self.d_sae = d_sae
        self.normalize_activations = normalize_activations
        self.dead_feature_window = int(dead_feature_window)
        self.register_buffer('act_scale', torch.ones(()))
        self.register_buffer('initialized', torch.zeros((), dtype=torch.bool))
        # forward passes (training steps) and tokens since each latent last fired
        self.register_buffer('steps_since_fired', torch.zeros(d_sae, dtype=torch.long))
        self.register_buffer('tokens_since_fired', torch.zeros(d_sae, dtype=torch.long))

    # ----------------------------------------------------------------------------- input checks
    def _check_tokens(self, x, what='x'):
        if not torch.is_tensor(x) or x.dim() != 2 or x.shape[1] != self.d_in:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise SAEConfigError(
                f'{type(self).__name__}: {what} has shape {shape}; expected tokens [N, '
                f'{self.d_in}] (d_in={self.d_in}). Flatten feature maps first, e.g. '
                "feat.permute(0, 2, 3, 1).reshape(-1, C) for a [B, C, H, W] map.")

    def _check_latents(self, h):
        if not torch.is_tensor(h) or h.dim() != 2 or h.shape[1] != self.d_sae:
            shape = tuple(h.shape) if torch.is_tensor(h) else type(h).__name__
            raise SAEConfigError(
                f'{type(self).__name__}: latents have shape {shape}; expected [N, {self.d_sae}] '
                f'(d_sae={self.d_sae}), as encode() returns. Pass the output of encode().')

    def _scale(self):
        if self.normalize_activations != 'none' and not bool(self.initialized):
            raise SAEConfigError(
                f'{type(self).__name__}: normalize_activations={self.normalize_activations!r} '
                'but the activation scale was never estimated; expected init_from_sample(tokens) '
                'before encoding (train_sae does it from the first batches), or a state dict '
                'saved after training. Call sae.init_from_sample(sample) first.')
        return self.act_scale

    # ------------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def fit_normalization(self, sample):
        """Set ``act_scale`` so that mean ||x * act_scale||^2 = d_in over ``sample`` (or 1)."""
        self._check_tokens(sample, 'the sample')
        if self.normalize_activations == 'none':
            self.act_scale.fill_(1.0)
            return self.act_scale
        mean_sq = sample.double().pow(2).sum(1).mean()
        if not torch.isfinite(mean_sq) or mean_sq <= 0:
            raise SAEConfigError(
                f'{type(self).__name__}: the sample\'s mean squared norm is {float(mean_sq)}; '
                'expected a positive finite number to estimate the activation scale. Pass real '
                'feature tokens (not zeros / NaN).')
        self.act_scale.fill_(math.sqrt(self.d_in / float(mean_sq)))
        return self.act_scale

    @torch.no_grad()
    def init_from_sample(self, sample, **kwargs):
        """Estimate ``act_scale`` (and variant-specific biases) from ``sample [N, d_in]``."""
        self.fit_normalization(sample)
        self._init_biases(sample * self.act_scale, **kwargs)
        self.initialized.fill_(True)

    def _init_biases(self, sample_n, **kwargs):
        pass

    # ------------------------------------------------------------------- encode / decode API
    def encode(self, x):
        """Latents ``h [N, d_sae]`` of tokens ``x [N, d_in]`` (input units)."""
        self._check_tokens(x)
        return self._encode_n(x * self._scale())

    def decode(self, h):
        """Reconstruction ``x_hat [N, d_in]`` in input units of latents ``h [N, d_sae]``."""
        self._check_latents(h)
        return self._decode_n(h) / self._scale()

    def forward(self, x):
        """``(x_hat, h)``: reconstruction in input units and latents."""
        h = self.encode(x)
        return self._decode_n(h) / self._scale(), h

    # ----------------------------------------------------------------------- dead latents
    @torch.no_grad()
    def update_firing(self, h):
        """Advance the counters by one step of ``len(h)`` tokens; zero them where a latent fired."""
        fired = (h > 0).any(0)
        self.steps_since_fired += 1
        self.tokens_since_fired += h.shape[0]
        self.steps_since_fired[fired] = 0
        self.tokens_since_fired[fired] = 0

    def dead_mask(self, window=None):
        """Latents silent for more than ``window`` steps (default ``dead_feature_window``)."""
        window = self.dead_feature_window if window is None else window
        return self.steps_since_fired > window

    # -------------------------------------------------------------------- decoder constraint
    def decoder_directions(self):
        """The dictionary ``[d_in, d_sae]`` as used in decode (columns = latent directions)."""
        return self.decoder.weight

    @torch.no_grad()
    def before_optimizer_step(self):
        """Remove the gradient component parallel to each decoder column (unit-norm variants)."""
        if not self.constrain_decoder or self.decoder.weight.grad is None:
            return
        w, g = self.decoder.weight, self.decoder.weight.grad
        w_unit = w / w.norm(dim=0, keepdim=True).clamp_min(1e-12)
        g -= w_unit * (g * w_unit).sum(0, keepdim=True)

    @torch.no_grad()
    def after_optimizer_step(self):
        """Renormalise decoder columns to unit norm (unit-norm variants)."""
        if self.constrain_decoder:
            w = self.decoder.weight
            w.div_(w.norm(dim=0, keepdim=True).clamp_min(1e-12))


@MODELS.register_module()
class ReluSAE(_SAEBase):
    """ReLU + L1 sparse autoencoder, in the seed's form or the Anthropic (2023/24) form.

    ``variant='reference'`` (Diffusion Dictionary Learning's notebook, from e2e_sae):
    ``h = relu(W_enc x + b_enc)``, ``x_hat = normalize(W_dec, dim=0) h + b_dec`` (unit columns by
    reparameterisation in every forward), ``W_dec`` initialised orthogonal, no pre-encoder bias;
    loss = MSE (mean over elements) + ``l1_coefficient`` * mean_tokens(||h||_1) / d_in, default
    coefficient 0.001. No activation normalisation by default (the seed had none).

    ``variant='anthropic'`` (Towards Monosemanticity, as dictionary_learning's StandardTrainer):
    ``h = relu(W_enc (x - b_dec) + b_enc)``, ``x_hat = W_dec h + b_dec``; ``W_dec`` = random unit
    columns x 0.1 and ``W_enc = W_dec^T``; loss = ||x - x_hat||^2 (sum over dim, mean over tokens)
    + ``l1_coefficient`` * warmup(step) * mean_tokens(||h||_1), warmup linear from 0 to 1 over
    ``sparsity_warmup_steps``; decoder columns renormalised after every optimiser step with the
    parallel gradient removed first (ConstrainedAdam); ``b_dec`` initialised to the geometric
    median of a sample; default coefficient 0.1, normalisation 'expected_average_only_in'.
    """

    VARIANTS = ('reference', 'anthropic')

    def __init__(self, d_in, d_sae, variant='reference', l1_coefficient=None,
                 sparsity_warmup_steps=None, normalize_activations=None,
                 dead_feature_window=1000, b_dec_init='geometric_median'):
        if variant not in self.VARIANTS:
            raise SAEConfigError(
                f'ReluSAE: variant={variant!r} is not known; expected one of {self.VARIANTS} '
                "('reference' = the seed's e2e_sae form, 'anthropic' = pre-encoder bias, "
                'sparsity warm-up and constrained decoder). Fix the config.')
        if normalize_activations is None:
            normalize_activations = 'none' if variant == 'reference' else 'expected_average_only_in'
        super().__init__(d_in, d_sae, normalize_activations, dead_feature_window)
        if b_dec_init not in ('geometric_median', 'mean', 'zeros'):
            raise SAEConfigError(
                f"ReluSAE: b_dec_init={b_dec_init!r} is not known; expected 'geometric_median', "
                "'mean' or 'zeros'. Fix the config.")
        self.variant = variant
        self.constrain_decoder = variant == 'anthropic'
        self.l1_coefficient = float(
            l1_coefficient if l1_coefficient is not None else
            (1e-3 if variant == 'reference' else 0.1))
        self.sparsity_warmup_steps = int(
            sparsity_warmup_steps if sparsity_warmup_steps is not None else
            (0 if variant == 'reference' else 2000))
        self.b_dec_init = b_dec_init
        self.encoder = nn.Linear(d_in, d_sae)
        self.decoder = nn.Linear(d_sae, d_in)
        with torch.no_grad():
            if variant == 'reference':
                nn.init.orthogonal_(self.decoder.weight)
            else:
                w = torch.randn(d_in, d_sae)
                w = w / w.norm(dim=0, keepdim=True) * 0.1
                self.decoder.weight.copy_(w)
                self.encoder.weight.copy_(w.t())
                self.encoder.bias.zero_()
                self.decoder.bias.zero_()

    def _init_biases(self, sample_n, **kwargs):
        if self.variant != 'anthropic' or self.b_dec_init == 'zeros':
            return
        center = (geometric_median(sample_n) if self.b_dec_init == 'geometric_median'
                  else sample_n.double().mean(0))
        self.decoder.bias.copy_(center.to(self.decoder.bias))

    def decoder_directions(self):
        if self.variant == 'reference':
            return F.normalize(self.decoder.weight, dim=0)
        return self.decoder.weight

    def _encode_n(self, x):
        if self.variant == 'anthropic':
            x = x - self.decoder.bias
        return F.relu(self.encoder(x))

    def _decode_n(self, h):
        return F.linear(h, self.decoder_directions(), self.decoder.bias)

    def sparsity_scale(self, step):
        """L1 warm-up factor: min(1, step / sparsity_warmup_steps); 1 without warm-up."""
        if self.sparsity_warmup_steps <= 0 or step is None:
            return 1.0
        return min(1.0, step / self.sparsity_warmup_steps)

    def loss(self, x, step=None):
        """``dict(loss, mse, sparsity, l0, auxk=0)`` of tokens ``x``; terms in normalised units.

        In training mode the firing counters advance by this batch.
        """
        self._check_tokens(x)
        xn = x * self._scale()
        h = self._encode_n(xn)
        x_hat = self._decode_n(h)
        l1 = h.abs().sum(-1).mean()
        if self.variant == 'reference':
            mse = F.mse_loss(x_hat, xn)
            sparsity = self.l1_coefficient * l1 / self.d_in
        else:
            mse = (x_hat - xn).pow(2).sum(-1).mean()
            sparsity = self.l1_coefficient * self.sparsity_scale(step) * l1
        if self.training:
            self.update_firing(h)
        return dict(loss=mse + sparsity, mse=mse, sparsity=sparsity, l1=l1,
                    l0=(h > 0).sum(-1).float().mean(), auxk=xn.new_zeros(()))

    @torch.no_grad()
    def resample_dead(self, x, optimizer=None, dead=None, generator=None):
        """Re-initialise dead latents from high-loss inputs (Anthropic 2023); returns their indices.

        ``dead`` defaults to latents silent for more than ``dead_feature_window`` steps. Each dead
        latent takes an input ``v`` of ``x`` drawn with probability proportional to the squared
        reconstruction loss of that input: decoder column = ``v / ||v||``, encoder row = ``v /
        ||v||`` x 0.2 x the mean encoder-row norm of the alive latents, encoder bias 0. Adam
        moments (``exp_avg``, ``exp_avg_sq``) of exactly these rows / columns / biases are zeroed
        and their firing counters reset. ``v`` is taken in the normalised space, relative to the
        pre-encoder bias in the 'anthropic' variant.
        """
        self._check_tokens(x, 'the resampling inputs')
        dead = self.dead_mask() if dead is None else dead.to(torch.bool)
        idx = dead.nonzero().flatten()
        if idx.numel() == 0:
            return idx
        xn = x * self._scale()
        h = self._encode_n(xn)
        losses = (self._decode_n(h) - xn).pow(2).sum(-1)
        weights = losses.pow(2).double()
        if not torch.isfinite(weights).all() or weights.sum() <= 0:
            weights = torch.ones_like(weights)
        pick = torch.multinomial(weights, idx.numel(), replacement=True, generator=generator)
        v = xn[pick]
        if self.variant == 'anthropic':
            v = v - self.decoder.bias
        v_unit = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
        alive = ~dead
        enc_norm = (self.encoder.weight[alive].norm(dim=1).mean() if alive.any()
                    else self.encoder.weight.new_tensor(1.0))
        self.encoder.weight[idx] = v_unit * enc_norm * 0.2
        self.encoder.bias[idx] = 0.0
        self.decoder.weight[:, idx] = v_unit.t()
        self.steps_since_fired[idx] = 0
        self.tokens_since_fired[idx] = 0
        if optimizer is not None:
            for param, index in ((self.encoder.weight, (idx, )), (self.encoder.bias, (idx, )),
                                 (self.decoder.weight, (slice(None), idx))):
                state = optimizer.state.get(param, {})
                for key in ('exp_avg', 'exp_avg_sq', 'max_exp_avg_sq'):
                    if key in state:
                        state[key][index] = 0.0
        return idx

    def extra_repr(self):
        return (f'd_in={self.d_in}, d_sae={self.d_sae}, variant={self.variant!r}, '
                f'l1_coefficient={self.l1_coefficient}, '
                f'normalize_activations={self.normalize_activations!r}')


@MODELS.register_module()
class TopKSAE(_SAEBase):
    """TopK sparse autoencoder with the AuxK loss (Gao et al. 2024, openai/sparse_autoencoder).

    ``h = relu(topk_k(W_enc (x - pre_bias) + latent_bias))`` (at most ``k`` nonzeros per token),
    ``x_hat = W_dec h + pre_bias``. ``W_dec`` is tied to ``W_enc^T`` at init with unit columns,
    renormalised after every optimiser step (parallel gradient removed first). ``pre_bias`` is
    initialised to the geometric median of a sample (``pre_bias_init='mean'`` for the mean).

    Loss (normalised units) = NMSE + ``auxk_coef`` * AuxK, with NMSE = sum ||x - x_hat||^2 /
    sum ||x||^2 over the batch, and AuxK = sum ||e - e_hat||^2 / sum ||e||^2 where ``e = x -
    x_hat`` (detached) is the residual and ``e_hat = W_dec z`` with ``z = relu(topk_auxk(pre))``
    taken over the DEAD latents only (silent for more than ``dead_steps_threshold`` steps). AuxK is
    0 while no latent is dead.
    """

    constrain_decoder = True

    def __init__(self, d_in, d_sae, k, auxk=None, auxk_coef=1 / 32, dead_steps_threshold=1000,
                 normalize_activations='expected_average_only_in',
                 pre_bias_init='geometric_median'):
        super().__init__(d_in, d_sae, normalize_activations, dead_steps_threshold)
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= d_sae:
            raise SAEConfigError(
                f'TopKSAE: k={k!r} is not an integer in [1, d_sae={d_sae}]; expected the number '
                'of active latents per token (e.g. k=32). Fix the config.')
        auxk = d_in // 2 if auxk is None else auxk
        if not isinstance(auxk, int) or isinstance(auxk, bool) or auxk < 1:
            raise SAEConfigError(
                f'TopKSAE: auxk={auxk!r} is not a positive integer; expected how many dead '
                'latents the AuxK loss may use (default d_in // 2, the paper\'s heuristic). Fix '
                'the config.')
        if pre_bias_init not in ('geometric_median', 'mean', 'zeros'):
            raise SAEConfigError(
                f"TopKSAE: pre_bias_init={pre_bias_init!r} is not known; expected "
                "'geometric_median', 'mean' or 'zeros'. Fix the config.")
        self.k = k
        self.auxk = auxk
        self.auxk_coef = float(auxk_coef)
        self.pre_bias_init = pre_bias_init
        self.pre_bias = nn.Parameter(torch.zeros(d_in))
        self.encoder = nn.Linear(d_in, d_sae)  # encoder.bias is the latent bias
        self.decoder = nn.Linear(d_sae, d_in, bias=False)
        with torch.no_grad():
            self.encoder.bias.zero_()
            w = self.encoder.weight.t().clone()
            self.decoder.weight.copy_(w / w.norm(dim=0, keepdim=True).clamp_min(1e-12))

    @property
    def dead_steps_threshold(self):
        return self.dead_feature_window

    def _init_biases(self, sample_n, **kwargs):
        if self.pre_bias_init == 'zeros':
            return
        center = (geometric_median(sample_n) if self.pre_bias_init == 'geometric_median'
                  else sample_n.double().mean(0))
        self.pre_bias.copy_(center.to(self.pre_bias))

    def _pre_acts(self, xn):
        return self.encoder(xn - self.pre_bias)

    @staticmethod
    def _topk_relu(pre, k):
        values, indices = pre.topk(k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, indices, F.relu(values))

    def _encode_n(self, xn):
        return self._topk_relu(self._pre_acts(xn), self.k)

    def _decode_n(self, h):
        return self.decoder(h) + self.pre_bias

    def auxk_latents(self, pre, dead):
        """``relu(topk)`` of the pre-activations restricted to ``dead`` latents (others 0)."""
        n_dead = int(dead.sum())
        if n_dead == 0:
            return torch.zeros_like(pre)
        masked = pre.masked_fill(~dead, float('-inf'))
        return self._topk_relu(masked, min(self.auxk, n_dead))

    def loss(self, x, step=None):
        """``dict(loss, mse, auxk, sparsity=0, l0, l1)`` of tokens ``x``; ``mse`` is the NMSE.

        The dead mask is taken from the counters *before* this batch; in training mode the
        counters then advance by this batch.
        """
        self._check_tokens(x)
        xn = x * self._scale()
        pre = self._pre_acts(xn)
        h = self._topk_relu(pre, self.k)
        x_hat = self._decode_n(h)
        nmse = (x_hat - xn).pow(2).sum() / xn.pow(2).sum().clamp_min(1e-12)
        dead = self.dead_mask()
        if dead.any():
            e = (xn - x_hat).detach()
            e_hat = self.decoder(self.auxk_latents(pre, dead))
            auxk = (e_hat - e).pow(2).sum() / e.pow(2).sum().clamp_min(1e-12)
        else:
            auxk = xn.new_zeros(())
        if self.training:
            self.update_firing(h)
        return dict(loss=nmse + self.auxk_coef * auxk, mse=nmse, auxk=auxk,
                    sparsity=xn.new_zeros(()), l0=(h > 0).sum(-1).float().mean(),
                    l1=h.abs().sum(-1).mean())

    def extra_repr(self):
        return (f'd_in={self.d_in}, d_sae={self.d_sae}, k={self.k}, auxk={self.auxk}, '
                f'normalize_activations={self.normalize_activations!r}')
