"""A linear pixel probe on one block's features per timestep: how the seed chose its timestep.

For each timestep the block's native ``[C, h, w]`` features of the labelled images are kept (never
the upsampled ``[C, H, W]``); the feature of a pixel is the bilinear value at that pixel exactly as
``F.interpolate(features, (H, W), mode='bilinear', align_corners=False)`` would give it (computed
with ``grid_sample`` at the sampled pixels only). A softmax-regression probe (a linear layer on
standardised features, full-batch L-BFGS) is fitted on ``pixels_per_image`` random labelled pixels
of each train image, then every valid pixel of the test images is classified: pixel accuracy and
dataset-level mIoU (classes present in the test ground truth; ddpm-segmentation's variant, where
absent classes count 0, as ``miou_absent_zero``).

The one rule: labelled folders are ddpm-segmentation's release format (square images with a
same-stem ``.npy`` uint8 class mask beside each); masks are resized with nearest neighbour
(``cv2.INTER_NEAREST``'s ``floor(i * in / out)`` rule) to the image size used.
"""
import os
import os.path as osp

import numpy as np
import torch
import torch.nn.functional as F

from .collect import SAEFeatureError, load_square_image

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.gif')


def resize_mask_nearest(mask, size):
    """``[H, W]`` -> ``[size, size]`` with ``cv2.INTER_NEAREST``'s rule (source index
    ``floor(i * H / size)``)."""
    h, w = mask.shape
    ys = np.minimum((np.arange(size) * h / size).astype(np.int64), h - 1)
    xs = np.minimum((np.arange(size) * w / size).astype(np.int64), w - 1)
    return mask[ys][:, xs]


def read_labelled_folder(root, size, num_images=None):
    """``(keys, images [N, 3, S, S] in [-1, 1], masks [N, S, S] long)`` of a folder of images
    with same-stem ``.npy`` masks (the first ``num_images`` in sorted order, as the release's
    ``training_number``)."""
    if not osp.isdir(root):
        raise SAEFeatureError(
            f'{root}: expected a folder of labelled images (images + same-stem .npy masks, '
            f'ddpm-segmentation\'s datasets/<name>/real/<split>/), but no such folder exists. '
            f'Pass the right folder.')
    keys = sorted(f for f in os.listdir(root)
                  if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.'))
    if not keys:
        raise SAEFeatureError(
            f'{root}: expected images with extensions {IMAGE_EXTENSIONS} and same-stem .npy '
            f'masks, found no image. Pass the folder holding them.')
    keys = keys[:num_images] if num_images else keys
    images, masks = [], []
    for key in keys:
        mask_path = osp.join(root, osp.splitext(key)[0] + '.npy')
        if not osp.isfile(mask_path):
            raise SAEFeatureError(
                f'{mask_path}: expected the class mask of {key} (a same-stem .npy of uint8 class '
                f'ids), but no such file exists. Add it or remove the image from the folder.')
        images.append(load_square_image(osp.join(root, key), size))
        mask = np.load(mask_path, allow_pickle=False)
        if mask.ndim != 2:
            raise SAEFeatureError(f'{mask_path}: expected a 2-d class-id mask, got shape '
                                  f'{mask.shape}. Store one [H, W] array per image.')
        masks.append(torch.from_numpy(resize_mask_nearest(mask, size).astype(np.int64)))
    return keys, torch.stack(images), torch.stack(masks)


def bilinear_at(features, ys, xs, size):
    """``[P, C]``: the values of ``F.interpolate(features[None], size, mode='bilinear',
    align_corners=False)`` at pixels ``(ys, xs)``, without upsampling the whole map.
    ``features``: ``[C, h, w]``; ``size``: ``(H, W)``."""
    hh, ww = size
    gx = (2 * xs.float() + 1) / ww - 1
    gy = (2 * ys.float() + 1) / hh - 1
    grid = torch.stack([gx, gy], dim=-1).view(1, 1, -1, 2)
    out = F.grid_sample(features[None].float(), grid, mode='bilinear', padding_mode='border',
                        align_corners=False)
    return out[0, :, 0].t()


def sample_pixels(mask, count, generator, ignore_index=None):
    """``(ys, xs)`` of ``count`` random valid pixels of ``mask`` (all when fewer)."""
    valid = torch.ones_like(mask, dtype=torch.bool) if ignore_index is None \
        else mask != ignore_index
    idx = torch.nonzero(valid.flatten()).flatten()
    if idx.numel() > count:
        idx = idx[torch.randperm(idx.numel(), generator=generator)[:count]]
    return idx // mask.shape[1], idx % mask.shape[1]


def fit_probe(x, y, num_classes, steps=100, weight_decay=1e-4):
    """A linear softmax probe on ``x`` ``[P, C]`` / ``y`` ``[P]``: ``(mean, std, linear)``."""
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    torch.manual_seed(0)
    linear = torch.nn.Linear(x.shape[1], num_classes)
    opt = torch.optim.LBFGS(linear.parameters(), lr=1, max_iter=steps,
                            line_search_fn='strong_wolfe')

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(linear(z), y) + weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return mean, std, linear


def scores(confusion):
    """Pixel accuracy, mIoU over classes present in the ground truth, and the reference's mIoU
    with absent classes counted 0, from a ``[C, C]`` (truth, prediction) confusion matrix."""
    conf = confusion.double()
    inter = conf.diag()
    union = conf.sum(0) + conf.sum(1) - inter
    iou = inter / (union + 1e-8)
    present = conf.sum(1) > 0
    return dict(accuracy=float(inter.sum() / conf.sum().clamp_min(1)),
                miou=float(iou[present].mean()) if present.any() else 0.0,
                miou_absent_zero=float(iou.mean()),
                iou=[float(v) for v in iou])


@torch.no_grad()
def probe_timestep(train_feats, train_masks, test_feats, test_masks, num_classes,
                   pixels_per_image=2000, ignore_index=None, seed=0, steps=100):
    """Fit a probe on the train features (``[N, C, h, w]`` native) and score it on the test set.
    Returns :func:`scores`' dict plus ``train_pixels``."""
    gen = torch.Generator().manual_seed(seed)
    xs_all, ys_all = [], []
    size = tuple(train_masks.shape[-2:])
    for feats, mask in zip(train_feats, train_masks):
        ys, xs = sample_pixels(mask, pixels_per_image, gen, ignore_index)
        xs_all.append(bilinear_at(feats, ys, xs, size))
        ys_all.append(mask[ys, xs])
    x, y = torch.cat(xs_all), torch.cat(ys_all).long()
    bad = y[(y < 0) | (y >= num_classes)]
    if bad.numel():
        raise SAEFeatureError(
            f'A train mask holds class id {int(bad[0])}, outside 0..{num_classes - 1}. Set '
            f'--num-classes to the dataset\'s class count, or --ignore-index to its ignore label.')
    mean, std, linear = fit_probe(x, y, num_classes, steps)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    size = tuple(test_masks.shape[-2:])
    for feats, mask in zip(test_feats, test_masks):
        up = F.interpolate(feats[None].float(), size=size, mode='bilinear',
                           align_corners=False)[0]
        pred = linear(((up.flatten(1).t() - mean) / std)).argmax(1)
        truth = mask.flatten().long()
        valid = truth != ignore_index if ignore_index is not None else \
            torch.ones_like(truth, dtype=torch.bool)
        valid &= (truth >= 0) & (truth < num_classes)
        confusion += torch.bincount(truth[valid] * num_classes + pred[valid],
                                    minlength=num_classes ** 2).view(num_classes, num_classes)
    return dict(scores(confusion), train_pixels=int(x.shape[0]))
