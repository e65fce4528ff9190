"""How well each SAE latent's activation map matches each ground-truth class mask, over a dataset.

For latent ``j`` and class ``c`` the binary map ``A_j = up(h_j) > tau`` (the latent's ``[h, w]``
map bilinearly upsampled to the mask's size, ``align_corners=False``, as the seed upsamples; then
thresholded) is compared with the mask ``M_c`` at the mask's resolution. Counts are summed over
every image first (dataset level, as ddpm-segmentation's ``compute_iou``), then

    IoU        |A ∩ M| / |A ∪ M|            (a real union: |A| + |M| - |A ∩ M|)
    recall     |A ∩ M| / |M|                ("intersection with mask", IwM)
    precision  |A ∩ M| / |A|
    F1         2 |A ∩ M| / (|A| + |M|)      (= Dice)
    legacy_dice_half  |A ∩ M| / (|A| + |M|) (the seed's "IoU": Dice / 2; never call it IoU)

The one rule: everything is streamed. Per batch only ``[B, k, H, W]`` booleans of a chunk of
``k`` latents exist (``latent_chunk``), reduced at once to ``[k, C]`` counts; a
``[N, H, W, n_latents]`` tensor is never built. Pixels labelled ``ignore_index`` count for
neither A nor M. The best latent of a class is ranked by IoU among the latents that are not
DENSE (firing on more than ``dense_fraction`` of all valid pixels, default 0.2): an always-on
latent overlaps every large class and would otherwise win everywhere.
"""
import json

import torch
import torch.nn.functional as F

from common.io.atomic import atomic_write_text


class AlignmentError(ValueError):
    """Wrong shapes or options for the mask alignment; one paragraph with the fix."""


METRICS = ('iou', 'recall', 'precision', 'f1', 'legacy_dice_half')


class MaskAlignment:
    """Streaming latent-vs-class-mask counts; :meth:`update` per batch, :meth:`compute` at the end.

    Args:
        num_latents (int): the SAE's dictionary size ``n``.
        num_classes (int): class ids ``0..num_classes-1`` in the masks.
        tau (float): a latent is active where its (upsampled) activation is ``> tau``.
        dense_fraction (float): latents active on more than this fraction of the valid pixels are
            DENSE and left out of the best-latent ranking (still reported).
        ignore_index (int | None): a mask value that counts for neither A nor M (e.g. 255).
        latent_chunk (int): latents upsampled at once (memory: ``B * chunk * H * W`` booleans).
    """

    def __init__(self, num_latents, num_classes, tau=0.0, dense_fraction=0.2, ignore_index=None,
                 latent_chunk=64):
        if not 0 < dense_fraction <= 1:
            raise AlignmentError(
                f'MaskAlignment: dense_fraction={dense_fraction} must be in (0, 1] (the largest '
                f'fraction of pixels a latent may fire on and still be ranked; default 0.2).')
        self.num_latents = int(num_latents)
        self.num_classes = int(num_classes)
        self.tau = float(tau)
        self.dense_fraction = float(dense_fraction)
        self.ignore_index = ignore_index
        self.latent_chunk = int(latent_chunk)
        dt = torch.float64
        self.intersection = torch.zeros(self.num_latents, self.num_classes, dtype=dt)
        self.active = torch.zeros(self.num_latents, dtype=dt)   # |A_j|
        self.area = torch.zeros(self.num_classes, dtype=dt)     # |M_c|
        self.pixels = 0                                         # valid pixels seen

    def update(self, latent_maps, masks):
        """Add a batch: ``latent_maps`` ``[B, n, h, w]`` (SAE codes as maps; see
        ``collect.from_tokens``) and ``masks`` ``[B, H, W]`` integer class ids."""
        if latent_maps.dim() != 4 or latent_maps.shape[1] != self.num_latents:
            raise AlignmentError(
                f'MaskAlignment.update: expected latent maps [B, {self.num_latents}, h, w], got '
                f'shape {tuple(latent_maps.shape)}. Reshape the SAE codes of each image\'s '
                f'tokens with segmentation.sae.collect.from_tokens(h, h_tokens, w_tokens).')
        if masks.dim() != 3 or masks.shape[0] != latent_maps.shape[0]:
            raise AlignmentError(
                f'MaskAlignment.update: expected masks [B, H, W] with B={latent_maps.shape[0]}, '
                f'got shape {tuple(masks.shape)}. Give one class-id mask per image.')
        masks = masks.long().cpu()
        valid = torch.ones_like(masks, dtype=torch.bool) if self.ignore_index is None \
            else masks != self.ignore_index
        bad = masks[valid & ((masks < 0) | (masks >= self.num_classes))]
        if bad.numel():
            raise AlignmentError(
                f'MaskAlignment.update: mask value {int(bad[0])} is outside the classes '
                f'0..{self.num_classes - 1} (ignore_index={self.ignore_index}). Set num_classes '
                f'to the dataset\'s class count or ignore_index to its ignore label.')
        b, (hm, wm) = masks.shape[0], masks.shape[-2:]
        onehot = F.one_hot(torch.where(valid, masks, 0), self.num_classes).permute(0, 3, 1, 2)
        onehot = (onehot * valid[:, None]).reshape(b, self.num_classes, -1).float()  # [B, C, P]
        self.area += onehot.sum(dim=(0, 2)).double()
        self.pixels += int(valid.sum())
        validf = valid.reshape(b, 1, -1)
        for start in range(0, self.num_latents, self.latent_chunk):
            chunk = latent_maps[:, start:start + self.latent_chunk].float().cpu()
            up = F.interpolate(chunk, size=(hm, wm), mode='bilinear', align_corners=False) \
                if chunk.shape[-2:] != (hm, wm) else chunk
            act = (up.reshape(b, chunk.shape[1], -1) > self.tau) & validf      # [B, k, P]
            actf = act.float()
            self.active[start:start + chunk.shape[1]] += actf.sum(dim=(0, 2)).double()
            self.intersection[start:start + chunk.shape[1]] += \
                torch.bmm(actf, onehot.transpose(1, 2)).sum(0).double()       # [k, C]

    def compute(self):
        """``dict`` of ``[n, C]`` float64 tensors (:data:`METRICS`), plus ``density`` ``[n]``
        (fraction of valid pixels where each latent is active), ``dense`` ``[n]`` bool,
        ``best_latent`` ``[C]`` (-1: no ranked latent overlaps the class) and ``best_iou``."""
        inter = self.intersection
        act = self.active[:, None]
        area = self.area[None, :]

        def ratio(num, den):
            return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))

        union = act + area - inter
        out = dict(iou=ratio(inter, union), recall=ratio(inter, area.expand_as(inter)),
                   precision=ratio(inter, act.expand_as(inter)),
                   f1=ratio(2 * inter, act + area), legacy_dice_half=ratio(inter, act + area))
        density = self.active / max(self.pixels, 1)
        dense = density > self.dense_fraction
        ranked = out['iou'].masked_fill(dense[:, None], -1.0)
        best_iou, best = ranked.max(dim=0)
        best = torch.where(best_iou > 0, best, torch.full_like(best, -1))
        out.update(density=density, dense=dense, best_latent=best,
                   best_iou=best_iou.clamp_min(0), intersection=inter, active=self.active,
                   area=self.area)
        return out

    def table(self, class_names=None, top_k=3):
        """The latent-to-class table: per class its ``top_k`` non-dense latents by IoU, each with
        every metric; plus the dense latents and the mean best IoU over classes present."""
        res = self.compute()
        names = list(class_names) if class_names is not None else \
            [str(c) for c in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise AlignmentError(
                f'MaskAlignment.table: {len(names)} class names for {self.num_classes} classes; '
                f'give one name per class id.')
        ranked = res['iou'].masked_fill(res['dense'][:, None], -1.0)
        rows = []
        for c in range(self.num_classes):
            order = torch.argsort(ranked[:, c], descending=True)[:top_k].tolist()
            latents = [dict(latent=j, density=float(res['density'][j]),
                            **{m: float(res[m][j, c]) for m in METRICS})
                       for j in order if ranked[j, c] > 0]
            rows.append(dict(class_id=c, name=names[c], pixels=int(res['area'][c]),
                             best_latent=int(res['best_latent'][c]),
                             best_iou=float(res['best_iou'][c]), top=latents))
        present = [r['best_iou'] for r in rows if r['pixels'] > 0]
        return dict(tau=self.tau, dense_fraction=self.dense_fraction,
                    num_latents=self.num_latents, pixels=self.pixels,
                    dense_latents=torch.nonzero(res['dense']).flatten().tolist(),
                    dead_latents=int((res['active'] == 0).sum()),
                    mean_best_iou=sum(present) / len(present) if present else 0.0,
                    classes=rows,
                    note='iou uses a real union; legacy_dice_half = |A∩M|/(|A|+|M|) is the '
                         'seed\'s "IoU" (Dice/2), kept for comparison only')


def table_markdown(table):
    """The latent-to-class table as markdown (one row per class, its best latent's numbers)."""
    lines = [f'Latents vs class masks (tau={table["tau"]}, dense latents (> '
             f'{table["dense_fraction"]:.0%} of pixels) excluded: {len(table["dense_latents"])}; '
             f'mean best IoU {table["mean_best_iou"]:.4f})', '',
             '| class | pixels | best latent | IoU | recall (IwM) | precision | F1 | legacy Dice/2 '
             '| next latents (IoU) |',
             '|---|---|---|---|---|---|---|---|---|']
    for row in table['classes']:
        top = row['top']
        if top:
            b = top[0]
            rest = ', '.join(f'{t["latent"]} ({t["iou"]:.3f})' for t in top[1:]) or '-'
            lines.append(f'| {row["name"]} | {row["pixels"]} | {b["latent"]} | {b["iou"]:.4f} | '
                         f'{b["recall"]:.4f} | {b["precision"]:.4f} | {b["f1"]:.4f} | '
                         f'{b["legacy_dice_half"]:.4f} | {rest} |')
        else:
            lines.append(f'| {row["name"]} | {row["pixels"]} | - | 0 | 0 | 0 | 0 | 0 | - |')
    return '\n'.join(lines) + '\n'


def write_table(table, json_path, md_path=None):
    """Write the table as JSON (and markdown), atomically."""
    atomic_write_text(json_path, json.dumps(table, indent=1) + '\n')
    if md_path:
        atomic_write_text(md_path, table_markdown(table))


@torch.no_grad()
def latent_maps(sae, features, batch_tokens=65536):
    """SAE codes of block features as maps: ``[B, C, h, w]`` -> ``[B, n, h, w]`` through
    ``sae.encode(tokens [N, C]) -> [N, n]`` (tokens in ``collect.to_tokens`` order)."""
    from .collect import from_tokens, to_tokens
    b, _, h, w = features.shape
    tokens = to_tokens(features.float())
    codes = torch.cat([sae.encode(tokens[i:i + batch_tokens])
                       for i in range(0, tokens.shape[0], batch_tokens)])
    maps = from_tokens(codes, h, w)
    return maps if b > 1 else maps[None]


@torch.no_grad()
def align_dataset(sae, batches, num_classes, **kwargs):
    """:class:`MaskAlignment` over ``batches``: an iterable of ``(features [B, C, h, w], masks
    [B, H, W])``; ``kwargs`` go to :class:`MaskAlignment`. Returns the filled accumulator."""
    acc = None
    for feats, masks in batches:
        maps = latent_maps(sae, feats)
        if acc is None:
            acc = MaskAlignment(maps.shape[1], num_classes, **kwargs)
        acc.update(maps, masks)
    if acc is None:
        raise AlignmentError('align_dataset: no batches; give at least one labelled image.')
    return acc
