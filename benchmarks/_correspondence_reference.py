"""The reference evaluation protocol of semantic correspondence (DIFT / DistillDIFT dev style),
re-implemented from the research notes as the baseline ``correspondence_eval.py`` times ours against.

The one rule: :func:`reference_evaluate` does what those evaluation scripts do, pair by pair and
keypoint by keypoint, and nothing of ours: no batching across images, no matching at feature
resolution. Per pair (notes, ``/work/shared/reference/correspondence.md`` sections 1.1, 2, 4.3):

  1. the source and the target image each go through the extractor alone (one image per call);
  2. each feature map ``[1, C, h, w]`` is bilinearly upsampled (``align_corners=False``) to its
     original image size, ``[C, H, W]`` (DIFT's ``nn.Upsample(size=imsize, mode='bilinear')``);
  3. for each source keypoint, in a Python loop: the descriptor is read at the keypoint's
     integer pixel of the upsampled source map (rounded, clamped into the image), L2-normalised,
     compared by cosine with every pixel of the upsampled target map, and the hard argmax pixel
     ``(idx % W, idx // W)`` is the prediction, in original target pixels.

Choices in the reference's favour (they make it faster, never slower, than the scripts it stands
for): each map is upsampled once per pair and the target map is L2-normalised once per pair, not
once per keypoint; everything stays on the features' device (no ``.cpu().numpy()`` per keypoint).
The extractor is whatever callable it is given: the same extractor module ours uses (so the two
sides differ only in the evaluation protocol) or DIFT's featurizer (``_dift_reference.py``).
"""
import numpy as np
import torch.nn.functional as F


def upsample_to_image(feat, image_wh):
    """``feat [1, C, h, w]`` bilinearly resized to the image, ``[C, H, W]``."""
    w, h = image_wh
    return F.interpolate(feat.float(), size=(int(h), int(w)), mode='bilinear',
                         align_corners=False)[0]


def reference_match(src_feat, trg_feat, src_kps, src_wh, trg_wh):
    """One pair: ``src_kps [K, 2]`` (original source pixels) → ``[K, 2]`` predicted original
    target pixels (integers, as float64 numpy), one keypoint at a time."""
    src_up = upsample_to_image(src_feat, src_wh)  # [C, Hs, Ws]
    trg_up = upsample_to_image(trg_feat, trg_wh)  # [C, Ht, Wt]
    c, _, w_t = trg_up.shape
    trg_vec = F.normalize(trg_up.reshape(c, -1), dim=0)  # [C, Ht * Wt]
    w_s, h_s = (int(v) for v in src_wh)
    preds = []
    for x, y in np.asarray(src_kps, dtype=np.float64).reshape(-1, 2):
        xi = min(max(int(round(x)), 0), w_s - 1)
        yi = min(max(int(round(y)), 0), h_s - 1)
        src_vec = F.normalize(src_up[:, yi, xi], dim=0)  # [C]
        cos = src_vec @ trg_vec  # [Ht * Wt]
        idx = int(cos.argmax())
        preds.append((idx % w_t, idx // w_t))
    return np.asarray(preds, dtype=np.float64).reshape(-1, 2)


def reference_evaluate(extract, pairs):
    """Predictions of every pair under the reference protocol.

    ``extract(image [1, 3, S, S] float in [0, 1], category) -> [1, C, h, w]`` is called once per
    image; ``pairs``: dicts with ``src`` / ``trg`` (the model-input images, ``[3, S, S]`` uint8),
    ``src_kps`` ``[K, 2]`` original source pixels, ``src_imsize`` / ``trg_imsize`` ``(W, H)`` of
    the originals and ``category``. Returns one ``[K, 2]`` array per pair (original target
    pixels).
    """
    out = []
    for pair in pairs:
        src = pair['src'][None].float().div_(255)
        trg = pair['trg'][None].float().div_(255)
        src_feat = extract(src, pair['category'])
        trg_feat = extract(trg, pair['category'])
        out.append(reference_match(src_feat, trg_feat, pair['src_kps'], pair['src_imsize'],
                                   pair['trg_imsize']))
    return out
