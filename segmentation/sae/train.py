"""Train a sparse autoencoder on a stream of feature tokens; safetensors checkpoints, resume.

The one rule: a run is a pure function of (SAE init, batches in order, options): the optimiser
state, the step and the token count are checkpointed with the SAE (one safetensors file, written
atomically, nothing pickled), and on resume the first ``step`` batches of ``token_batches`` are
skipped, so "train 2n steps" and "train n steps, stop, resume to 2n" end with the same weights.

Defaults are the seed's recipe (Diffusion Dictionary Learning): AdamW, lr 1e-3, weight decay 0,
gradient-norm clip 1.0 (the seed's batch was 64 tokens: that is the caller's ``token_batches``).
Per step: ``loss`` -> backward -> ``before_optimizer_step`` (parallel-gradient removal) -> clip ->
``step`` -> ``after_optimizer_step`` (unit-norm decoder). ReLU SAEs may resample dead latents every
``resample_steps`` steps (latents silent for more than ``resample_steps // 2`` steps).
"""
import json
import os
import os.path as osp
import time
from collections import deque

import torch
from mmengine.logging import print_log
from safetensors import safe_open
from safetensors.torch import save_file

from common.io.atomic import atomic_path, atomic_write_text
from common.progress import progress
from .models import ReluSAE, SAEConfigError

LAST = 'last_checkpoint'
FORMAT = 'diffteacher-sae-checkpoint-v1'


class SAECheckpointError(RuntimeError):
    """A checkpoint file does not fit the SAE (or optimiser) it is loaded into."""


# ----------------------------------------------------------------------------- checkpoints
def save_sae(sae, path, optimizer=None, step=0, tokens=0, extra=None):
    """Write ``sae`` (state dict incl. buffers), optionally ``optimizer``, to a safetensors file.

    Tensors ``model.<key>`` and ``optim.<param index>.<state key>``; the optimiser's param groups,
    ``step``, ``tokens``, the SAE class and ``extra`` (JSON-able) go into the file's metadata.
    """
    tensors = {f'model.{k}': v.detach().contiguous().cpu() for k, v in sae.state_dict().items()}
    meta = dict(format=FORMAT, sae_class=type(sae).__name__, step=int(step), tokens=int(tokens),
                extra=extra or {})
    if optimizer is not None:
        params = list(sae.parameters())
        index = {id(p): i for i, p in enumerate(params)}
        for param, state in optimizer.state.items():
            for key, value in state.items():
                if not torch.is_tensor(value):
                    value = torch.tensor(value)
                tensors[f'optim.{index[id(param)]}.{key}'] = value.detach().contiguous().cpu()
        groups = []
        for group in optimizer.param_groups:
            entry = {k: (list(v) if isinstance(v, tuple) else v)
                     for k, v in group.items() if k != 'params'}
            entry['params'] = [index[id(p)] for p in group['params']]
            groups.append(entry)
        meta['param_groups'] = groups
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={'json': json.dumps(meta)})
    return path


def load_sae(path, sae, optimizer=None):
    """Load a :func:`save_sae` file into ``sae`` (and ``optimizer``); returns its metadata dict."""
    if not osp.isfile(path):
        raise SAECheckpointError(
            f'SAE checkpoint {path!r} does not exist; expected a .safetensors file written by '
            'train_sae/save_sae. Check the path (or the work_dir\'s last_checkpoint).')
    with safe_open(path, framework='pt') as f:
        raw = (f.metadata() or {}).get('json')
        meta = json.loads(raw) if raw else {}
        if meta.get('format') != FORMAT:
            raise SAECheckpointError(
                f'SAE checkpoint {path!r} has no {FORMAT!r} metadata; expected a file written by '
                'segmentation.sae.train.save_sae. Re-save the SAE with save_sae().')
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    model = {k[len('model.'):]: v for k, v in tensors.items() if k.startswith('model.')}
    own = sae.state_dict()
    bad = sorted(set(own) ^ set(model)) + sorted(
        k for k in set(own) & set(model) if own[k].shape != model[k].shape)
    if meta.get('sae_class') != type(sae).__name__ or bad:
        shapes = ', '.join(f'{k}: file {tuple(model[k].shape) if k in model else "-"} vs SAE '
                           f'{tuple(own[k].shape) if k in own else "-"}' for k in bad[:6])
        raise SAECheckpointError(
            f'SAE checkpoint {path!r} holds a {meta.get("sae_class")} that does not fit this '
            f'{type(sae).__name__} (mismatched keys/shapes: {shapes or "none"}); expected the '
            'same class, d_in and d_sae. Build the SAE with the options it was trained with.')
    sae.load_state_dict(model)
    if optimizer is not None:
        if 'param_groups' not in meta:
            raise SAECheckpointError(
                f'SAE checkpoint {path!r} holds no optimiser state; expected one written during '
                'training (train_sae) to resume. Start a new run, or load the SAE alone.')
        state = {}
        for key, value in tensors.items():
            if key.startswith('optim.'):
                _, i, name = key.split('.', 2)
                state.setdefault(int(i), {})[name] = value
        groups = [dict(g) for g in meta['param_groups']]
        for g in groups:
            if 'betas' in g:
                g['betas'] = tuple(g['betas'])
        optimizer.load_state_dict(dict(state=state, param_groups=groups))
    return meta


# -------------------------------------------------------------------------------- batches
def _batches(token_batches, skip):
    """Yield batches forever when ``token_batches`` is re-iterable (epochs), once if an iterator."""
    reiterable = iter(token_batches) is not token_batches
    seen = 0
    while True:
        empty = True
        for x in token_batches:
            empty = False
            if seen < skip:
                seen += 1
                continue
            yield x
        if empty and seen == 0:
            raise SAEConfigError(
                'train_sae: token_batches yielded no batch; expected an iterable of [B, d_in] '
                'token tensors. Check the feature shards / data loader.')
        if not reiterable:
            return


def train_sae(sae, token_batches, steps, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.999),
              eps=1e-8, grad_clip=1.0, resample_steps=None, resample_pool_tokens=8192,
              init_tokens=4096, log_interval=100, work_dir=None, checkpoint_interval=None,
              resume=True, seed=0, device=None):
    """Train ``sae`` for ``steps`` optimiser steps on ``token_batches`` (``[B, d_in]`` tensors).

    - Initialisation: an SAE not yet initialised takes its activation scale / pre-bias from the
      first ``init_tokens`` tokens (``sae.init_from_sample``); those batches are then trained on.
    - ``resample_steps``: ReLU SAEs only; every that many steps, latents silent for more than
      ``resample_steps // 2`` steps are re-initialised from the tokens seen since the previous
      resampling (the last ``resample_pool_tokens`` of them; ``ReluSAE.resample_dead``, random
      draws seeded by ``seed`` and the step).
    - ``work_dir`` + ``checkpoint_interval``: ``sae_step{N}.safetensors`` every that many steps
      and at the end, the name of the latest in ``work_dir/last_checkpoint``; with ``resume`` a
      run finding a checkpoint there continues from it (skipping the batches already used).
    - A re-iterable ``token_batches`` (list, DataLoader) is cycled as epochs; a one-shot iterator
      ends the run early when it runs out.

    Returns ``dict(step, tokens, seconds, tokens_per_s, history, checkpoint)``; ``history`` holds
    one dict (step, loss, mse, auxk, l0, dead_fraction, tokens_per_s) per ``log_interval`` steps.
    """
    if resample_steps is not None and not isinstance(sae, ReluSAE):
        raise SAEConfigError(
            f'train_sae: resample_steps={resample_steps} was given for a {type(sae).__name__}; '
            'resampling is for ReLU SAEs (a TopKSAE revives dead latents with its AuxK loss). '
            'Drop resample_steps, or train a ReluSAE.')
    if resample_steps is not None and resample_steps < 2:
        raise SAEConfigError(
            f'train_sae: resample_steps={resample_steps} is too small; expected an integer >= 2 '
            '(latents silent for resample_steps // 2 steps are resampled). Fix the option.')
    if device is not None:
        sae.to(device)
    device = next(sae.parameters()).device
    optimizer = torch.optim.AdamW(sae.parameters(), lr=lr, betas=tuple(betas), eps=eps,
                                  weight_decay=weight_decay)
    step, tokens = 0, 0
    if work_dir is not None and resume and osp.isfile(osp.join(work_dir, LAST)):
        with open(osp.join(work_dir, LAST), encoding='utf-8') as f:
            name = f.read().strip()
        meta = load_sae(osp.join(work_dir, name), sae, optimizer)
        step, tokens = int(meta['step']), int(meta['tokens'])
        print_log(f'train_sae: resumed from {osp.join(work_dir, name)} at step {step}',
                  logger='current')
    # the resampling pool holds the batches since the last resampling step: on resume, re-read
    # those batches (without training on them) so the pool is what an uninterrupted run had
    refill = step - (step // resample_steps) * resample_steps if resample_steps else 0
    stream = _batches(token_batches, skip=step - refill)
    pool = deque()
    pool_tokens = 0

    def add_to_pool(x):
        nonlocal pool_tokens
        pool.append(x.detach())
        pool_tokens += x.shape[0]
        while pool_tokens - pool[0].shape[0] >= resample_pool_tokens:
            pool_tokens -= pool.popleft().shape[0]

    for _ in range(refill):
        x = next(stream, None)
        if x is None:
            break
        add_to_pool(x.to(device=device, dtype=torch.float32))
    buffered = deque()
    if not bool(sae.initialized):
        sample, n = [], 0
        for x in stream:
            buffered.append(x)
            sample.append(x)
            n += x.shape[0]
            if n >= init_tokens:
                break
        if not sample:
            raise SAEConfigError(
                'train_sae: no batch to initialise the SAE from; expected token_batches to yield '
                '[B, d_in] tensors. Check the data.')
        sae.init_from_sample(torch.cat(sample).to(device=device, dtype=torch.float32))

    def batches():
        while buffered:
            yield buffered.popleft()
        yield from stream

    history = []
    checkpoint = None
    sae.train()
    start, start_tokens = time.perf_counter(), tokens
    last_log_t, last_log_tokens = start, tokens
    params = [p for p in sae.parameters() if p.requires_grad]
    it = batches()
    for _ in progress(range(step, steps), desc='train SAE', total=steps - step):
        x = next(it, None)
        if x is None:
            print_log(f'train_sae: token_batches ran out after step {step}', logger='current')
            break
        x = x.to(device=device, dtype=torch.float32)
        out = sae.loss(x, step)
        optimizer.zero_grad(set_to_none=True)
        out['loss'].backward()
        sae.before_optimizer_step()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        sae.after_optimizer_step()
        step += 1
        tokens += x.shape[0]
        if resample_steps is not None:
            add_to_pool(x)
            if step % resample_steps == 0:
                gen = torch.Generator(device='cpu').manual_seed(seed * 1_000_003 + step)
                dead = sae.steps_since_fired > resample_steps // 2
                idx = sae.resample_dead(torch.cat(list(pool)), optimizer, dead, generator=gen)
                pool.clear()
                pool_tokens = 0
                if idx.numel():
                    print_log(f'train_sae: step {step}: resampled {idx.numel()} dead latents',
                              logger='current')
        if log_interval and (step % log_interval == 0 or step == steps):
            now = time.perf_counter()
            rate = (tokens - last_log_tokens) / max(now - last_log_t, 1e-9)
            last_log_t, last_log_tokens = now, tokens
            rec = dict(step=step,
                       **{k: float(out[k].detach()) for k in ('loss', 'mse', 'auxk', 'l0')},
                       dead_fraction=float(sae.dead_mask().float().mean()), tokens_per_s=rate)
            history.append(rec)
            print_log('train_sae: ' + ', '.join(
                f'{k} {v:.4g}' if isinstance(v, float) else f'{k} {v}' for k, v in rec.items()),
                logger='current')
        if work_dir is not None and checkpoint_interval and (
                step % checkpoint_interval == 0 or step == steps):
            checkpoint = _checkpoint(sae, optimizer, work_dir, step, tokens)
    if work_dir is not None and checkpoint_interval and (
            checkpoint is None or not checkpoint.endswith(f'sae_step{step}.safetensors')):
        checkpoint = _checkpoint(sae, optimizer, work_dir, step, tokens)
    seconds = time.perf_counter() - start
    return dict(step=step, tokens=tokens, seconds=seconds,
                tokens_per_s=(tokens - start_tokens) / max(seconds, 1e-9), history=history,
                checkpoint=checkpoint)


def _checkpoint(sae, optimizer, work_dir, step, tokens):
    os.makedirs(work_dir, exist_ok=True)
    name = f'sae_step{step}.safetensors'
    path = save_sae(sae, osp.join(work_dir, name), optimizer, step=step, tokens=tokens)
    atomic_write_text(osp.join(work_dir, LAST), name + '\n')
    return path
