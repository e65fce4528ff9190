"""Figures of SAE latents against class masks: per class, its top latents' maps over images.

One row per image: the image, its ground-truth mask of the class (white on black), then each top
latent's activation map (bilinearly upsampled to the image size, as the alignment compares them;
colour scale shared by a latent across its row-mates so images compare), with the latent's
dataset-level IoU in the column title.

The one rule: matplotlib's Agg backend only (no display), and every png is written atomically
(a temporary file renamed onto the target), so an interrupted run never leaves a broken figure.
"""
import os.path as osp

import numpy as np
import torch
import torch.nn.functional as F

from common.io.atomic import atomic_path


def _image_array(image):
    """``[3, H, W]`` in [-1, 1] (or [0, 1] float, or uint8 ``[H, W, 3]``) -> float ``[H, W, 3]``
    in [0, 1]."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.dim() == 3 and image.shape[0] in (1, 3):
            image = image.permute(1, 2, 0)
        image = image.float().numpy()
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255
    if image.min() < 0:
        image = (image + 1) / 2
    return np.clip(image, 0, 1)


def save_figure(fig, path, dpi=100):
    """Save a matplotlib figure as png, atomically, and close it."""
    import matplotlib.pyplot as plt
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=dpi, bbox_inches='tight')
    plt.close(fig)
    return path


def class_latent_figure(images, masks, maps, class_id, latents, path, class_name=None,
                        ious=None, max_images=4):
    """Write the figure of ``class_id``'s ``latents`` over (up to ``max_images``) images.

    Args:
        images: ``[N, 3, H, W]`` tensor in [-1, 1] (or a list of arrays).
        masks: ``[N, H, W]`` integer class ids.
        maps: ``[N, n, h, w]`` SAE latent maps (``alignment.latent_maps``) of the same images.
        latents (list[int]): the latents to show (e.g. the class's top-3 by IoU).
        ious (list[float] | None): shown in the column titles.
    Returns:
        ``path``.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    n = min(len(images), max_images)
    h_img, w_img = masks.shape[-2:]
    cols = 2 + len(latents)
    fig, axes = plt.subplots(n, cols, figsize=(1.8 * cols, 1.8 * n), squeeze=False)
    sel = maps[:n, list(latents)].float() if latents else maps[:n, :0].float()
    up = F.interpolate(sel, size=(h_img, w_img), mode='bilinear', align_corners=False) \
        if len(latents) else sel
    vmax = [float(up[:, k].max()) or 1.0 for k in range(len(latents))]
    name = class_name if class_name is not None else f'class {class_id}'
    for i in range(n):
        axes[i, 0].imshow(_image_array(images[i]))
        axes[i, 1].imshow((masks[i] == class_id).cpu().numpy(), cmap='gray', vmin=0, vmax=1)
        for k, j in enumerate(latents):
            axes[i, 2 + k].imshow(up[i, k].cpu().numpy(), cmap='magma', vmin=0, vmax=vmax[k])
        if i == 0:
            axes[i, 0].set_title('image', fontsize=8)
            axes[i, 1].set_title(f'mask: {name}', fontsize=8)
            for k, j in enumerate(latents):
                title = f'latent {j}' + (f'\nIoU {ious[k]:.3f}' if ious is not None else '')
                axes[i, 2 + k].set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, path)


def class_figures(images, masks, maps, table, out_dir, top_k=3, max_images=4, classes=None):
    """One :func:`class_latent_figure` per class of ``table`` (``MaskAlignment.table``) that has
    a ranked latent, showing the images where the class is largest. Returns the png paths."""
    paths = []
    for row in table['classes']:
        c = row['class_id']
        if classes is not None and c not in classes or not row['top']:
            continue
        area = (masks == c).flatten(1).sum(1)
        order = torch.argsort(area, descending=True)[:max_images]
        order = order[area[order] > 0]
        if not len(order):
            continue
        top = row['top'][:top_k]
        safe = ''.join(ch if ch.isalnum() or ch in '-_' else '_' for ch in row['name'])
        paths.append(class_latent_figure(
            images[order], masks[order], maps[order], c, [t['latent'] for t in top],
            osp.join(out_dir, f'class{c:03d}_{safe}.png'), row['name'],
            [t['iou'] for t in top], max_images))
    return paths
