"""SAE training throughput (tokens/s) at the seed's sizes; the seed's loop vs ours side by side.

Diffusion Dictionary Learning trains a ReLU SAE on block-6 tokens of the 256-px ADM (d_in 512,
dictionary x10 = 5120 latents in its best run, batch 64, AdamW 1e-3, gradient clip 1.0; notes
``seg_sae_dsd.md`` B.3). On random tokens (throughput does not depend on the values):

  1. tokens/s of ``train_sae`` for ``TopKSAE`` (k 32, AuxK) and ``ReluSAE`` ('reference' and
     'anthropic' variants) at batch 64 (the seed's) and 4096;
  2. the seed's training loop, re-implemented from the notes (encoder Linear + ReLU, decoder with
     ``F.normalize(W_dec, dim=0)`` in every forward, MSE + 0.001 * mean L1 / d_in, AdamW 1e-3,
     clip 1.0, a shuffled DataLoader of batch 64) vs ``train_sae`` on the same DataLoader with
     ``ReluSAE(variant='reference')`` (the same model), with the loss of both after the run.

The one rule: every number is measured in this run, both loops on the same tokens and batches,
after warm-up steps that are not timed; nothing is compared against figures from another run.

    python benchmarks/sae_throughput.py [--d-in 512] [--d-sae 5120] [--batches 64 4096]
        [--steps 30] [--large-steps 2] [--out results.json]
"""
import json
import os.path as osp
import sys
import time

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(HERE)
for _p in (ROOT, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)
if osp.join(ROOT, 'tools') not in sys.path:  # last: tools/test.py etc. shadow nothing
    sys.path.append(osp.join(ROOT, 'tools'))
import _cli  # noqa: E402

PROG = 'benchmarks/sae_throughput.py'
SAE_KINDS = ('topk', 'relu-reference', 'relu-anthropic')
SEED_BATCH = 64
SEED_L1 = 1e-3


def parse_args(argv=None):
    parser = _cli.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    parser.add_argument('--d-in', type=int, default=512, help='token width (512: ADM block 6)')
    parser.add_argument('--d-sae', type=int, default=5120, help='latents (5120: the seed x10)')
    parser.add_argument('--k', type=int, default=32, help='TopK: active latents per token (32)')
    parser.add_argument('--batches', type=int, nargs='+', default=[SEED_BATCH, 4096],
                        help='batch sizes (64 = the seed, 4096)')
    parser.add_argument('--steps', type=int, default=30,
                        help='timed steps at batches <= 1024 (30)')
    parser.add_argument('--large-steps', type=int, default=2,
                        help='timed steps at batches > 1024 (2)')
    parser.add_argument('--warmup', type=int, default=3,
                        help='untimed steps before each (3; at most 1 at batches > 1024)')
    parser.add_argument('--kinds', nargs='+', default=list(SAE_KINDS),
                        help=f'SAEs for part 1 ({", ".join(SAE_KINDS)})')
    parser.add_argument('--skip-seed', action='store_true', help='skip part 2')
    parser.add_argument('--out', default=None, help='write the results as JSON here')
    args = parser.parse_args(argv)
    for name in ('d_in', 'd_sae', 'k', 'steps', 'large_steps'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} {getattr(args, name)}: must be at least 1')
    if args.warmup < 0:
        parser.error(f'--warmup {args.warmup}: must be 0 or more')
    if args.k > args.d_sae:
        parser.error(f'--k {args.k}: at most --d-sae ({args.d_sae}) latents can be active')
    small = [b for b in args.batches if b < 2]
    if small:
        parser.error(f'--batches {small[0]}: a batch needs at least 2 tokens')
    bad = [k for k in args.kinds if k not in SAE_KINDS]
    if bad:
        parser.error(f'--kinds {bad[0]}: unknown SAE; choose from {", ".join(SAE_KINDS)}')
    if args.out and not args.out.endswith('.json'):
        parser.error(f'--out {args.out}: the results are JSON; give a path ending in .json')
    return args


# ------------------------------------------------------------------------------- the seed
def seed_sae(d_in, d_sae):
    """The seed's SAE (e2e_sae form): ``encoder`` Linear + ReLU, ``decoder`` Linear with an
    orthogonal init, used through ``F.normalize(decoder.weight, dim=0)``."""
    import torch
    from torch import nn

    class SeedSAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(d_in, d_sae), nn.ReLU())
            self.decoder = nn.Linear(d_sae, d_in)
            nn.init.orthogonal_(self.decoder.weight)

        def forward(self, x):
            h = self.encoder(x)
            w = torch.nn.functional.normalize(self.decoder.weight, dim=0)
            return torch.nn.functional.linear(h, w, self.decoder.bias), h

    return SeedSAE()


def seed_loss(model, x, d_in, coef=SEED_L1):
    """MSE (mean over elements) + ``coef`` * mean over tokens of ||h||_1 / d_in."""
    import torch.nn.functional as F
    x_hat, h = model(x)
    return F.mse_loss(x_hat, x) + coef * h.abs().sum(-1).mean() / d_in


def seed_train(model, loader, steps, d_in):
    """The seed's loop: AdamW(lr 1e-3, wd 0), clip_grad_norm 1.0, ``steps`` batches of
    ``loader`` (cycled). Returns the last loss."""
    import torch
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    done, loss = 0, None
    while done < steps:
        for (x, ) in loader:
            loss = seed_loss(model, x, d_in)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            done += 1
            if done == steps:
                break
    return float(loss.detach())


class FirstTensor:
    """A DataLoader over a ``TensorDataset`` yielding the tensors themselves (re-iterable)."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        return (batch[0] for batch in self.loader)


# ------------------------------------------------------------------------------- ours
def build_sae(kind, d_in, d_sae, k):
    from segmentation.sae import ReluSAE, TopKSAE
    if kind == 'topk':
        return TopKSAE(d_in, d_sae, k=k)
    return ReluSAE(d_in, d_sae, variant=kind.split('-', 1)[1])


def tokens_per_s(sae, batches, steps, warmup):
    """tokens/s of ``train_sae`` over ``steps`` steps after ``warmup`` untimed ones (the SAE is
    initialised from the first batches beforehand, outside the timing)."""
    from segmentation.sae import train_sae
    import torch
    sae.init_from_sample(torch.cat(batches)[:4096])
    if warmup:
        train_sae(sae, batches, warmup, log_interval=0)
    out = train_sae(sae, batches, steps, log_interval=0)
    return out['tokens'] / out['seconds'], out


def main(argv=None):
    args = parse_args(argv)
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from _timing import device_name
    from segmentation.sae import train_sae
    torch.manual_seed(0)
    print(f'device: {device_name("cpu")}; d_in {args.d_in}, d_sae {args.d_sae} '
          f'(x{args.d_sae / args.d_in:g}), random tokens, train_sae tokens/s after '
          f'{args.warmup} warm-up steps')
    results = dict(throughput=[], seed_vs_ours=None)
    for batch in args.batches:
        steps = args.steps if batch <= 1024 else args.large_steps
        g = torch.Generator().manual_seed(batch)
        n_batches = min(steps + args.warmup, 64)
        batches = list(torch.randn(n_batches * batch, args.d_in, generator=g).split(batch))
        for kind in args.kinds:
            sae = build_sae(kind, args.d_in, args.d_sae, args.k)
            warmup = args.warmup if batch <= 1024 else min(args.warmup, 1)
            rate, out = tokens_per_s(sae, batches, steps, warmup)
            results['throughput'].append(dict(kind=kind, batch=batch, steps=steps,
                                              tokens_per_s=rate, seconds=out['seconds']))
            print(f'  {kind:>15}, batch {batch:>5}: {rate:>9.0f} tokens/s '
                  f'({steps} steps, {out["seconds"]:.2f} s)')
    if not args.skip_seed:
        steps = args.steps
        g = torch.Generator().manual_seed(1)
        data = TensorDataset(torch.randn(max(steps + args.warmup, 64) * SEED_BATCH, args.d_in,
                                         generator=g))

        def loader():
            return DataLoader(data, batch_size=SEED_BATCH, shuffle=True, drop_last=True,
                              generator=torch.Generator().manual_seed(0))

        seed = seed_sae(args.d_in, args.d_sae)
        if args.warmup:
            seed_train(seed, loader(), args.warmup, args.d_in)
        start = time.perf_counter()
        seed_last = seed_train(seed, loader(), steps, args.d_in)
        t_seed = time.perf_counter() - start
        ours = build_sae('relu-reference', args.d_in, args.d_sae, args.k)
        ours.init_from_sample(data.tensors[0][:SEED_BATCH])
        if args.warmup:
            train_sae(ours, FirstTensor(loader()), args.warmup, log_interval=0)
        start = time.perf_counter()
        out = train_sae(ours, FirstTensor(loader()), steps, log_interval=steps)
        t_ours = time.perf_counter() - start
        ours_last = out['history'][-1]['loss']
        seed_rate, ours_rate = steps * SEED_BATCH / t_seed, steps * SEED_BATCH / t_ours
        results['seed_vs_ours'] = dict(
            steps=steps, batch=SEED_BATCH, seed_tokens_per_s=seed_rate,
            ours_tokens_per_s=ours_rate, ratio_ours_over_seed=ours_rate / seed_rate,
            seed_last_loss=seed_last, ours_last_loss=ours_last)
        print(f'  seed loop vs train_sae, ReLU SAE (reference form), batch {SEED_BATCH}, '
              f'{steps} steps: seed {seed_rate:.0f} tokens/s, ours {ours_rate:.0f} tokens/s '
              f'-> ours/seed {ours_rate / seed_rate:.2f}x; last loss seed {seed_last:.4f}, '
              f'ours {ours_last:.4f}')
    if args.out:
        from common.io.atomic import atomic_write_text
        atomic_write_text(args.out, json.dumps(results, indent=1) + '\n')
    return results


if __name__ == '__main__':
    main()
