"""The pixel-classifier ensemble of ddpm-segmentation, held as one batched module.

The reference trains ten small MLPs (DatasetGAN's ``pixel_classifier``) one after the other on the
same pixel features. Here the M models are ONE module whose parameters carry a leading model
axis: ``forward(x [P, D]) -> logits [M, P, C]`` runs all of them, so one pass over the pixel
features trains the whole ensemble. The one rule: model ``m`` of the ensemble is exactly a plain
``nn.Sequential`` (Linear-ReLU-BatchNorm1d-Linear-ReLU-BatchNorm1d-Linear) with the weights of
slice ``m`` (:meth:`PixelMLPEnsemble.sequential` / :meth:`PixelMLPEnsemble.load_sequential`), in
train and eval mode, and a model stopped early is frozen (weights and BatchNorm statistics) while
the others go on training.

Facts carried over from the reference (notes in ``../shared/reference/seg_sae_dsd.md`` A.4):
hidden sizes (128, 32) below 30 classes, (256, 128) from 30 on; Linear weights N(0, 0.02), biases 0;
Adam lr 1e-3, cross-entropy, batches of 64; early stopping from the 5th epoch on, per iteration
(batch loss below the best so far resets a counter, else +1; stop when the counter exceeds 50);
inference by majority vote (``torch.mode`` over the models' argmax) with the mean softmax and the
Jensen-Shannon uncertainty ``H(mean p) - mean H(p_m)``. One difference, documented: the reference
shuffles the pixels anew for every model, here every model sees the same batches (they still
differ by their random initialisation).
"""
import math

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.registry import MODELS
from torch import nn

HIDDEN_SMALL = (128, 32)
HIDDEN_LARGE = (256, 128)
LARGE_FROM_CLASSES = 30  # the reference: number_class < 30 -> small MLP


class EnsembleConfigError(ValueError):
    """A bad argument or input of the pixel ensemble."""


def hidden_sizes(num_classes, hidden='auto'):
    """The two hidden widths: the reference's choice by class count, or the ones given."""
    if hidden == 'auto':
        return HIDDEN_SMALL if num_classes < LARGE_FROM_CLASSES else HIDDEN_LARGE
    if (isinstance(hidden, (list, tuple)) and len(hidden) == 2
            and all(isinstance(h, int) and h > 0 for h in hidden)):
        return tuple(hidden)
    raise EnsembleConfigError(
        f"PixelMLPEnsemble: hidden={hidden!r} is not understood; expected 'auto' (the "
        f'reference: {HIDDEN_SMALL} below {LARGE_FROM_CLASSES} classes, {HIDDEN_LARGE} from '
        f'{LARGE_FROM_CLASSES} on) or two positive integers such as (128, 32). Fix hidden in the '
        'model config.')


class BatchedLinear(nn.Module):
    """M independent ``nn.Linear`` layers: weight ``[M, out, in]``, bias ``[M, out]``."""

    def __init__(self, num_models, in_features, out_features):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_models, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(num_models, out_features))
        self.reset_parameters()

    def reset_parameters(self, std=0.02):
        """The reference's ``init_weights('normal', gain=0.02)``: N(0, std) weights, zero bias."""
        nn.init.normal_(self.weight, 0.0, std)
        nn.init.zeros_(self.bias)

    def forward(self, x):
        # x: [P, in] shared by every model, or [M, P, in] one slice per model
        if x.dim() == 2:
            return torch.einsum('pi,moi->mpo', x, self.weight) + self.bias[:, None]
        return torch.baddbmm(self.bias[:, None], x, self.weight.transpose(1, 2))


class BatchedBatchNorm1d(nn.Module):
    """M independent ``nn.BatchNorm1d`` over ``[M, P, F]``; ``active`` ([M] bool) chooses which
    models' running statistics a training forward updates (a stopped model's stay as they are).

    Same arithmetic as ``nn.BatchNorm1d`` (eps 1e-5, momentum 0.1, biased variance to normalise,
    unbiased variance into ``running_var``).
    """

    def __init__(self, num_models, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(num_models, num_features))
        self.bias = nn.Parameter(torch.zeros(num_models, num_features))
        self.register_buffer('running_mean', torch.zeros(num_models, num_features))
        self.register_buffer('running_var', torch.ones(num_models, num_features))
        self.register_buffer('num_batches_tracked', torch.zeros(num_models, dtype=torch.long))

    def forward(self, x, active=None):
        if self.training:
            n = x.shape[1]
            if n < 2:
                raise EnsembleConfigError(
                    f'PixelMLPEnsemble: a training batch of {n} pixel(s); BatchNorm needs at '
                    'least 2 per batch. Drop the last incomplete batch (drop_last) or use a '
                    'larger batch.')
            mean = x.mean(dim=1)
            var = x.var(dim=1, unbiased=False)
            with torch.no_grad():
                keep = (torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
                        if active is None else active.to(x.device))
                upd = keep[:, None].to(x.dtype)
                new_mean = (1 - self.momentum) * self.running_mean + self.momentum * mean
                new_var = ((1 - self.momentum) * self.running_var
                           + self.momentum * var * n / (n - 1))
                self.running_mean.copy_(upd * new_mean + (1 - upd) * self.running_mean)
                self.running_var.copy_(upd * new_var + (1 - upd) * self.running_var)
                self.num_batches_tracked.add_(keep.long())
        else:
            mean, var = self.running_mean, self.running_var
        x = (x - mean[:, None]) / torch.sqrt(var[:, None] + self.eps)
        return x * self.weight[:, None] + self.bias[:, None]


@MODELS.register_module()
class PixelMLPEnsemble(nn.Module):
    """``num_models`` pixel MLPs of ddpm-segmentation as one batched module.

    Args:
        in_dim (int): feature size D of a pixel (8448 for the default ADM blocks and timesteps).
        num_classes (int): C, the reference's ``number_class`` (ignore class included).
        num_models (int): M, the ensemble size (the reference: 10).
        hidden ('auto' | (int, int)): hidden widths; ``'auto'`` is the reference's rule.

    ``forward(x [P, D]) -> logits [M, P, C]``.
    """

    def __init__(self, in_dim, num_classes, num_models=10, hidden='auto'):
        super().__init__()
        for name, value in (('in_dim', in_dim), ('num_classes', num_classes),
                            ('num_models', num_models)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise EnsembleConfigError(
                    f'PixelMLPEnsemble: {name}={value!r}; expected a positive integer. Fix '
                    f'{name} in the model config.')
        self.in_dim, self.num_classes, self.num_models = in_dim, num_classes, num_models
        self.hidden = hidden_sizes(num_classes, hidden)
        h1, h2 = self.hidden
        self.fc1 = BatchedLinear(num_models, in_dim, h1)
        self.bn1 = BatchedBatchNorm1d(num_models, h1)
        self.fc2 = BatchedLinear(num_models, h1, h2)
        self.bn2 = BatchedBatchNorm1d(num_models, h2)
        self.fc3 = BatchedLinear(num_models, h2, num_classes)

    def forward(self, x, active=None):
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise EnsembleConfigError(
                f'PixelMLPEnsemble: input of shape {tuple(x.shape)}; expected [P, {self.in_dim}] '
                f'(P pixels, {self.in_dim} features each). Check that the feature extractor '
                "(blocks, timesteps) matches the ensemble's in_dim.")
        x = self.bn1(F.relu(self.fc1(x)), active)
        x = self.bn2(F.relu(self.fc2(x)), active)
        return self.fc3(x)

    # -- one model as a plain nn.Sequential ------------------------------------------------------
    def _pairs(self, seq):
        return ((self.fc1, seq[0]), (self.bn1, seq[2]), (self.fc2, seq[3]), (self.bn2, seq[5]),
                (self.fc3, seq[6]))

    def sequential(self, m):
        """Model ``m`` as the reference's ``nn.Sequential`` (a copy of its weights and stats)."""
        h1, h2 = self.hidden
        seq = nn.Sequential(
            nn.Linear(self.in_dim, h1), nn.ReLU(), nn.BatchNorm1d(h1),
            nn.Linear(h1, h2), nn.ReLU(), nn.BatchNorm1d(h2),
            nn.Linear(h2, self.num_classes))
        seq.load_state_dict({
            f'{idx}.{key}': value
            for idx, (mine, _) in zip((0, 2, 3, 5, 6), self._pairs(seq))
            for key, value in self._slice(mine, m).items()})
        return seq.train(self.training)

    @staticmethod
    def _slice(layer, m):
        out = {'weight': layer.weight.detach()[m].clone(), 'bias': layer.bias.detach()[m].clone()}
        if isinstance(layer, BatchedBatchNorm1d):
            out.update(running_mean=layer.running_mean[m].clone(),
                       running_var=layer.running_var[m].clone(),
                       num_batches_tracked=layer.num_batches_tracked[m].clone())
        return out

    @torch.no_grad()
    def load_sequential(self, m, seq):
        """Copy the weights (and BatchNorm statistics) of a plain ``nn.Sequential`` into model m."""
        for mine, theirs in self._pairs(seq):
            mine.weight[m].copy_(theirs.weight)
            mine.bias[m].copy_(theirs.bias)
            if isinstance(mine, BatchedBatchNorm1d):
                mine.running_mean[m].copy_(theirs.running_mean)
                mine.running_var[m].copy_(theirs.running_var)
                mine.num_batches_tracked[m].copy_(theirs.num_batches_tracked)


class EarlyStopping:
    """The reference's early-stopping rule, one counter per model.

    From epoch ``start_epoch`` on (0-based; the reference's ``epoch > 3`` is ``start_epoch=4``),
    after every iteration: a model's batch loss below its best so far resets its counter and
    becomes the best, otherwise the counter grows by one; a model whose counter exceeds
    ``patience`` stops. Losses before ``start_epoch`` are not looked at (the best starts at
    infinity when the rule starts).
    """

    def __init__(self, num_models, patience=50, start_epoch=4):
        self.patience, self.start_epoch = patience, start_epoch
        self.best = torch.full((num_models, ), math.inf, dtype=torch.float64)
        self.count = torch.zeros(num_models, dtype=torch.long)
        self.stopped = torch.zeros(num_models, dtype=torch.bool)

    def update(self, epoch, losses):
        """Feed the batch losses ``[M]`` of one iteration; returns the models that stop now."""
        losses = torch.as_tensor(losses, dtype=torch.float64).detach().cpu()
        if epoch < self.start_epoch:
            return torch.zeros_like(self.stopped)
        active = ~self.stopped
        better = (losses < self.best) & active
        self.best = torch.where(better, losses, self.best)
        self.count = torch.where(better, torch.zeros_like(self.count),
                                 self.count + active.long())
        newly = active & (self.count > self.patience)
        self.stopped |= newly
        return newly


def _progress(iterable, desc, total=None):
    from common.progress import progress
    return progress(iterable, desc, total=total)


def train_ensemble(ensemble, batches, lr=1e-3, max_epochs=100, patience=50, start_epoch=4,
                   ignore_index=-100, device=None, log_interval=0, desc='pixel ensemble'):
    """Train every model of ``ensemble`` at once, each with its own early stopping.

    Args:
        ensemble (PixelMLPEnsemble): the batched ensemble (trained in place).
        batches: per epoch, the ``(features [P, D], labels [P])`` batches (the reference: 64
            pixels, shuffled, last incomplete batch dropped): a callable ``batches(epoch)``
            returning an iterable, or a re-iterable object (a list, a ``PixelSampler``).
        lr (float): Adam's learning rate (the reference: 1e-3).
        max_epochs, patience, start_epoch: the reference's 100, 50 and 4 (see
            :class:`EarlyStopping`).
        ignore_index (int): label left out of the loss (the batches usually hold none).

    Each model's loss is its own mean cross-entropy; the summed loss gives each model exactly
    the gradient it would get alone, and Adam works element-wise, so every model trains as if it
    were trained by itself on these batches. A stopped model is frozen: its running statistics
    are no longer updated and its parameters are put back after every step (Adam's momentum would
    otherwise still move them).

    Returns a dict: ``stopped`` ([M] bool), ``stop_epoch`` and ``stop_iter`` ([M] int, -1 for a
    model that ran to ``max_epochs``), ``last_loss`` ([M] float), ``iterations`` (int).
    """
    if device is not None:
        ensemble.to(device)
    device = ensemble.fc1.weight.device
    num_models = ensemble.num_models
    params = list(ensemble.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    stopper = EarlyStopping(num_models, patience=patience, start_epoch=start_epoch)
    frozen = [None] * len(params)
    stop_epoch = torch.full((num_models, ), -1, dtype=torch.long)
    stop_iter = torch.full((num_models, ), -1, dtype=torch.long)
    last_loss = torch.full((num_models, ), math.nan, dtype=torch.float64)
    iteration = 0
    ensemble.train()
    for epoch in _progress(range(max_epochs), desc, total=max_epochs):
        epoch_batches = batches(epoch) if callable(batches) else batches
        for features, labels in epoch_batches:
            features = torch.as_tensor(features, device=device, dtype=torch.float32)
            labels = torch.as_tensor(labels, device=device).long()
            active = ~stopper.stopped
            logits = ensemble(features, active=active.to(device))  # [M, P, C]
            per_model = F.cross_entropy(
                logits.permute(0, 2, 1), labels.expand(num_models, -1),
                ignore_index=ignore_index, reduction='none')
            valid = (labels != ignore_index).sum().clamp(min=1)
            losses = per_model.sum(dim=1) / valid  # [M], mean over the batch's pixels
            optimizer.zero_grad(set_to_none=True)
            losses[active.to(device)].sum().backward()
            optimizer.step()
            if stopper.stopped.any():
                with torch.no_grad():
                    keep = stopper.stopped.to(device)
                    for p, saved in zip(params, frozen):
                        p[keep] = saved[keep]
            iteration += 1
            detached = losses.detach().double().cpu()
            last_loss = torch.where(active, detached, last_loss)
            newly = stopper.update(epoch, detached)
            if newly.any():
                stop_epoch[newly] = epoch
                stop_iter[newly] = iteration
                with torch.no_grad():
                    for i, p in enumerate(params):
                        if frozen[i] is None:
                            frozen[i] = p.detach().clone()
                        else:
                            frozen[i][newly.to(device)] = p.detach()[newly.to(device)]
            if log_interval and iteration % log_interval == 0:
                print_log(f'{desc}: epoch {epoch} iteration {iteration} loss per model '
                          f'{[round(v, 4) for v in detached.tolist()]}', logger='current')
            if stopper.stopped.all():
                break
        if stopper.stopped.all():
            break
    ensemble.eval()
    return dict(stopped=stopper.stopped.clone(), stop_epoch=stop_epoch, stop_iter=stop_iter,
                last_loss=last_loss, iterations=iteration)


def entropy(probs, dim=-1):
    """Shannon entropy (nats) along ``dim``; 0 log 0 = 0 (as ``torch.distributions.Categorical``)."""
    return -(probs * torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))).sum(dim)


@torch.no_grad()
def predict_labels(logits):
    """The ensemble's prediction from per-model logits ``[M, P, C]``.

    Returns ``(vote [P] long, mean_softmax [P, C], js [P])``: the majority vote over the models'
    argmax (``torch.mode``; a tie goes as ``torch.mode`` resolves it), the mean of the models'
    softmax, and the Jensen-Shannon uncertainty ``H(mean p) - mean_m H(p_m)`` in nats.
    """
    if logits.dim() != 3:
        raise EnsembleConfigError(
            f'predict_labels: logits of shape {tuple(logits.shape)}; expected [M, P, C] '
            '(models, pixels, classes) as PixelMLPEnsemble returns them.')
    probs = logits.float().softmax(dim=-1)
    vote = torch.mode(logits.argmax(dim=-1), dim=0).values
    mean = probs.mean(dim=0)
    js = entropy(mean) - entropy(probs).mean(dim=0)
    return vote, mean, js


def image_uncertainty(js, top_fraction=0.1):
    """The reference's image score: the mean of the ``top_fraction`` largest pixel JS values."""
    flat = js.reshape(-1)
    k = max(1, int(flat.numel() * top_fraction))
    return float(flat.topk(k).values.mean())
