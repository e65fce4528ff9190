"""Splice-back fidelity: the UNet's noise prediction when one block's output is replaced.

For images ``x0`` at timestep ``t`` with seeded noise ``eps`` (one ``randn(1, 3, S, S)`` from
``seed``, shared by every image, as the SAE features were collected), ``x_t =
scheduler.add_noise(x0, eps, t)`` and the noise-prediction MSE ``mean((unet(x_t, t)[:, :3] -
eps) ** 2)`` is measured with the block's output

    original   unchanged (the floor)
    sae        replaced by ``sae.decode(sae.encode(tokens))`` (tokens ``[B * h * w, C]`` in
               ``collect.to_tokens`` order, reshaped back to ``[B, C, h, w]``)
    zeros      replaced by zeros (a reference point: the block removed)
    mean       replaced by the mean token (over the batch's tokens, or a given ``[C]`` vector)

``recovered = (mse_zeros - mse_sae) / (mse_zeros - mse_original)``: 1 when the reconstruction is
as good as the block itself, 0 when it is as bad as removing it (the analogue of language-model
SAEs' "loss recovered").

The one rule: the UNet's ``forward`` is never copied; the replacement is a forward hook on the
block (returning the new output), removed after every pass.
"""
import torch

from common.feature_hooks import resolve_modules

MODES = ('original', 'sae', 'zeros', 'mean')


class SpliceError(ValueError):
    """Wrong options for the splice-back measurement; one paragraph with the fix."""


def _replace_first(output, new):
    if isinstance(output, torch.Tensor):
        return new
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return (new, ) + tuple(output[1:])
    raise SpliceError(
        f'The hooked block returns {type(output).__name__}, not a tensor or a tuple starting '
        f'with one; hook a module whose output is the feature map [B, C, h, w].')


def _first(output):
    return output if isinstance(output, torch.Tensor) else output[0]


def shared_noise(shape, seed):
    """``randn(1, *shape[1:])`` from ``torch.Generator().manual_seed(seed)``, expanded to
    ``shape`` (ddpm-segmentation's shared fixed noise)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn((1, ) + tuple(shape[1:]), generator=gen).expand(tuple(shape)).contiguous()


@torch.no_grad()
def splice_fidelity(unet, module_path, sae, images, timestep, noise_scheduler, seed=0,
                    modes=MODES, mean_token=None, class_labels=None):
    """The noise-prediction MSE of ``unet`` for each of ``modes`` (see the module docstring).

    Args:
        unet: a diffusers ``UNet2DModel`` (epsilon prediction; extra output channels such as
            ADM's learned variance are dropped).
        module_path (str): the block whose output is replaced (``resolve_modules`` names).
        sae: ``encode(x [N, C]) -> h [N, n]`` and ``decode(h) -> [N, C]``.
        images (Tensor): ``[B, 3, S, S]`` in [-1, 1].
        timestep (int): the diffusion timestep.
        noise_scheduler: ``add_noise(x0, eps, t)`` (a ``DDPMScheduler``).
        seed (int): the shared noise's seed.
        mean_token (Tensor | None): ``[C]`` for ``'mean'`` (default: the mean of this batch's
            block tokens).
    Returns:
        ``dict(mse={mode: float}, recovered=float | None, feature_mse=float | None,
        feature_fve=float | None, timestep, seed, module)``; ``feature_mse`` / ``feature_fve``:
        the reconstruction's MSE and fraction of variance explained on the block's tokens.
    """
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SpliceError(f'splice_fidelity: modes {unknown} are not among {MODES}; choose from '
                          f'those.')
    if sae is None and 'sae' in modes:
        raise SpliceError("splice_fidelity: mode 'sae' needs an SAE; pass one or drop the mode.")
    module = resolve_modules(unet, [module_path], what='UNet')[module_path]
    param = next(unet.parameters())
    x0 = images.to(param.device, torch.float32)
    eps = shared_noise(x0.shape, seed).to(x0.device)
    t = torch.full((x0.shape[0], ), int(timestep), dtype=torch.long)
    x_t = noise_scheduler.add_noise(x0.cpu(), eps.cpu(), t).to(x0.device)
    kwargs = {} if class_labels is None else dict(class_labels=class_labels)
    captured = {}

    def run(replace=None):
        def hook(mod, inputs, output):
            feats = _first(output)
            captured['feats'] = feats.detach()
            if replace is None:
                return None
            new = replace(feats)
            captured['new'] = new.detach()
            return _replace_first(output, new.to(feats.dtype))
        handle = module.register_forward_hook(hook)
        try:
            pred = unet(x_t.to(param.dtype), t.to(x0.device), return_dict=False, **kwargs)[0]
        finally:
            handle.remove()
        return float(((pred.float()[:, :eps.shape[1]] - eps) ** 2).mean())

    def reconstruct(feats):
        from .collect import from_tokens, to_tokens
        b, c, h, w = feats.shape
        tokens = to_tokens(feats.float())
        rec = sae.decode(sae.encode(tokens))
        if rec.shape != tokens.shape:
            raise SpliceError(
                f'The SAE maps tokens {tuple(tokens.shape)} to {tuple(rec.shape)}; its decode '
                f'must return the block\'s width C={c}. Use an SAE trained on this block.')
        return from_tokens(rec, h, w).reshape(b, c, h, w)

    def mean_fill(feats):
        m = mean_token if mean_token is not None else \
            feats.float().mean(dim=(0, 2, 3))
        m = torch.as_tensor(m, dtype=torch.float32, device=feats.device).reshape(1, -1, 1, 1)
        if m.shape[1] != feats.shape[1]:
            raise SpliceError(f'mean_token has {m.shape[1]} entries; the block has '
                              f'{feats.shape[1]} channels.')
        return m.expand_as(feats)

    replacements = dict(original=None, sae=reconstruct, zeros=torch.zeros_like, mean=mean_fill)
    mse, feature_mse, fve = {}, None, None
    for mode in modes:
        mse[mode] = run(replacements[mode])
        if mode == 'sae':
            ref, rec = captured['feats'].float(), captured['new'].float()
            feature_mse = float(((rec - ref) ** 2).mean())
            var = float(((ref - ref.mean(dim=(0, 2, 3), keepdim=True)) ** 2).mean())
            fve = 1 - feature_mse / var if var > 0 else None
    recovered = None
    if {'original', 'sae', 'zeros'} <= set(mse) and mse['zeros'] != mse['original']:
        recovered = (mse['zeros'] - mse['sae']) / (mse['zeros'] - mse['original'])
    return dict(mse=mse, recovered=recovered, feature_mse=feature_mse, feature_fve=fve,
                timestep=int(timestep), seed=int(seed), module=module_path)
