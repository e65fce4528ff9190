"""Metrics of a sparse autoencoder on a set of tokens: reconstruction, sparsity, dead/dense latents.

The one rule: every number is a *dataset-level* statistic accumulated over all tokens seen
(``SAEStats.update`` per batch, ``compute`` once), never an average of per-batch numbers, so the
result does not depend on how the tokens were batched. Definitions:

- MSE = mean over tokens of ||x - x_hat||^2 (sum over the feature dimension);
- NMSE = MSE / mean over tokens of ||x||^2 (openai/sparse_autoencoder's normalisation);
- FVE (fraction of variance explained) = 1 - sum_d Var(x_d - x_hat_d) / sum_d Var(x_d), variances
  over tokens (dictionary_learning's ``frac_variance_explained``, SAELens' ``explained_variance``);
- L0 = mean number of nonzero latents per token; L1 = mean ||h||_1;
- a latent is dead when it never fired (h > 0) on any token, dense when it fires on more than
  ``dense_threshold`` of the tokens;
- the feature density histogram counts log10(firing frequency) of the latents that fired.
"""
import numpy as np
import torch

from .models import SAEConfigError


class SAEStats:
    """Streaming accumulator of the metrics above (float64 sums; any number of batches)."""

    def __init__(self, d_in, d_sae):
        self.d_in = d_in
        self.d_sae = d_sae
        self.n = 0
        z = dict(dtype=torch.float64)
        self.sum_x = torch.zeros(d_in, **z)
        self.sum_x2 = torch.zeros(d_in, **z)
        self.sum_r = torch.zeros(d_in, **z)
        self.sum_r2 = torch.zeros(d_in, **z)
        self.sum_x_norm2 = torch.zeros((), **z)
        self.sum_l0 = torch.zeros((), **z)
        self.sum_l1 = torch.zeros((), **z)
        self.fire_counts = torch.zeros(d_sae, dtype=torch.long)

    @torch.no_grad()
    def update(self, x, x_hat, h):
        """Add a batch: tokens ``x [N, d_in]``, their reconstructions ``x_hat``, latents ``h``."""
        if x.shape != x_hat.shape or x.dim() != 2 or x.shape[1] != self.d_in or \
                h.dim() != 2 or h.shape != (x.shape[0], self.d_sae):
            raise SAEConfigError(
                f'SAEStats.update: got x {tuple(x.shape)}, x_hat {tuple(x_hat.shape)}, h '
                f'{tuple(h.shape)}; expected x and x_hat [N, {self.d_in}] and h [N, '
                f'{self.d_sae}] for the same N tokens. Pass (x, *sae(x)).')
        x = x.detach().double().cpu()
        r = x - x_hat.detach().double().cpu()
        h = h.detach().cpu()
        self.n += x.shape[0]
        self.sum_x += x.sum(0)
        self.sum_x2 += x.pow(2).sum(0)
        self.sum_r += r.sum(0)
        self.sum_r2 += r.pow(2).sum(0)
        self.sum_x_norm2 += x.pow(2).sum()
        fired = h > 0
        self.sum_l0 += (h != 0).sum().double()
        self.sum_l1 += h.double().abs().sum()
        self.fire_counts += fired.sum(0)

    def compute(self, dense_threshold=0.1):
        """Dict of floats / tensors: mse, nmse, fve, l0, l1, frequency, dead, dense, n_tokens."""
        if self.n == 0:
            raise SAEConfigError(
                'SAEStats.compute: no tokens were added; expected at least one update(x, x_hat, '
                'h) call. Check that the evaluation set is not empty.')
        n = self.n
        mse = float(self.sum_r2.sum() / n)
        var_x = (self.sum_x2 - self.sum_x.pow(2) / n).sum()
        var_r = (self.sum_r2 - self.sum_r.pow(2) / n).sum()
        frequency = self.fire_counts.double() / n
        return dict(
            n_tokens=n,
            mse=mse,
            nmse=mse / max(float(self.sum_x_norm2 / n), 1e-300),
            fve=float(1.0 - var_r / var_x) if var_x > 0 else float('nan'),
            l0=float(self.sum_l0 / n),
            l1=float(self.sum_l1 / n),
            frequency=frequency,
            dead=(self.fire_counts == 0).nonzero().flatten(),
            dense=(frequency > dense_threshold).nonzero().flatten(),
            dead_fraction=float((self.fire_counts == 0).double().mean()),
            dense_fraction=float((frequency > dense_threshold).double().mean()),
        )


def reconstruction_metrics(x, x_hat):
    """``dict(mse, nmse, fve)`` of one set of tokens (see the module docstring)."""
    stats = SAEStats(x.shape[-1], 1)
    stats.update(x, x_hat, x.new_zeros(x.shape[0], 1))
    out = stats.compute()
    return {key: out[key] for key in ('mse', 'nmse', 'fve')}


def sparsity_metrics(h):
    """``dict(l0, l1)`` of latents ``h [N, d_sae]``."""
    h = h.detach().double()
    return dict(l0=float((h != 0).sum(-1).double().mean()), l1=float(h.abs().sum(-1).mean()))


@torch.no_grad()
def evaluate_sae(sae, token_batches, dense_threshold=0.1, max_batches=None):
    """Run ``sae`` in eval mode (counters untouched) over ``token_batches``; return the stats."""
    was_training = sae.training
    sae.eval()
    stats = SAEStats(sae.d_in, sae.d_sae)
    try:
        for i, x in enumerate(token_batches):
            if max_batches is not None and i >= max_batches:
                break
            x_hat, h = sae(x)
            stats.update(x, x_hat, h)
    finally:
        sae.train(was_training)
    return stats.compute(dense_threshold)


def feature_density_histogram(frequency, bins=50, range_log10=None):
    """Histogram of log10(firing frequency) of the latents that fired.

    Returns ``dict(counts, edges, n_dead)``: numpy arrays from ``np.histogram`` of
    ``log10(frequency[frequency > 0])`` and the number of latents with frequency 0 (left out of
    the histogram since log10(0) is -inf). ``range_log10`` fixes the bin range, e.g. (-8, 0).
    """
    freq = np.asarray(frequency.cpu() if torch.is_tensor(frequency) else frequency,
                      dtype=np.float64)
    if freq.ndim != 1 or (freq < 0).any() or (freq > 1).any():
        raise SAEConfigError(
            f'feature_density_histogram: frequency has shape {freq.shape} and range '
            f'[{freq.min() if freq.size else "-"}, {freq.max() if freq.size else "-"}]; expected '
            'a 1-d array of firing frequencies in [0, 1] (SAEStats.compute()["frequency"]).')
    alive = freq[freq > 0]
    counts, edges = np.histogram(np.log10(alive), bins=bins, range=range_log10)
    return dict(counts=counts, edges=edges, n_dead=int((freq == 0).sum()))


def plot_feature_density(frequency, path=None, bins=50, title='Feature density'):
    """Matplotlib figure of the log10 feature-density histogram; written atomically to ``path``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    hist = feature_density_histogram(frequency, bins=bins)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    edges = hist['edges']
    ax.bar(edges[:-1], hist['counts'], width=np.diff(edges), align='edge', color='tab:blue')
    ax.set_xlabel('log10(firing frequency)')
    ax.set_ylabel('latents')
    ax.set_title(f'{title} ({hist["n_dead"]} dead)')
    fig.tight_layout()
    if path is not None:
        import os

        from common.io.atomic import atomic_path
        ext = os.path.splitext(os.fspath(path))[1].lstrip('.') or 'png'
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext)
    return fig
