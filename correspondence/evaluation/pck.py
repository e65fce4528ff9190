"""PCK (percentage of correct keypoints) as pure functions: thresholds, correctness, averaging.

The one rule: every convention that makes two published PCK numbers differ is an explicit
argument here (which box sets the threshold, in which frame distances are measured, ``<`` or
``<=``, how points are averaged), and :data:`PRESETS` names the combination each reference used.
Nothing is chosen silently: a threshold that needs a box the sample lacks is an error, not a
fallback to another box.

Conventions (see ``correspondence/geometry.py`` for the frames):

* Distances are measured between the prediction and the ground truth of the *target* image,
  both mapped from original pixels into the ``frame`` (``'original'``, ``'stretched'`` or
  ``'padded'`` at ``frame_size``) of the target image.
* The threshold is ``alpha * L`` where ``L`` is a reference length (:data:`THRESHOLDS`) measured
  in the same frame (:func:`reference_length`).
* A keypoint is correct when ``distance <= alpha * L`` (``compare='<='``) or
  ``distance < alpha * L`` (``compare='<'``), both sides in float64.
"""
import numpy as np

from ..geometry import FRAMES, frame_transform

THRESHOLDS = ('target_bbox', 'source_bbox', 'target_kps', 'source_kps', 'image')
"""Reference lengths ``L`` of the PCK threshold ``alpha * L``:

* ``'target_bbox'``: ``max(w, h)`` of the target object's box (SPair-71k standard: the devkit,
  DIFT, SD-DINO, GeoAware, DistillDIFT, Hyperfeatures' ``pck_bbox``).
* ``'source_bbox'``: the same on the source box (Hedlin's CATs-derived SPair loader).
* ``'target_kps'`` / ``'source_kps'``: ``max(w, h)`` of the box around the target / source
  keypoints (PF-WILLOW, which has no boxes: DistillDIFT uses the target keypoints; the classic
  CNNGeometric/DenseMatching "pf" procedure the source keypoints).
* ``'image'``: ``max(W, H)`` of the target image (PF-PASCAL; Hyperfeatures' ``pck_img``).
"""

THRESHOLD_SCALES = ('frame', 'x', 'y')
"""How ``L`` enters a frame that is not ``'original'``:

* ``'frame'`` (standard): ``L`` is measured in the frame, i.e. the box (or keypoints, or image)
  is mapped into the frame first and ``L = max(w', h')`` taken there. In the ``'padded'`` frame
  that is ``s * L``; in the ``'stretched'`` frame ``max(w * S_x / W, h * S_y / H)``.
* ``'x'`` / ``'y'``: ``L`` is measured in original pixels and multiplied by the frame's x or y
  scale of the image the length belongs to. ``'y'`` reproduces DistillDIFT's release
  (``max(bbox_w, bbox_h) * 840 / H_orig`` in its stretched 840 x 840 frame), ``'x'`` Hedlin's CUB
  (``max(w, h) * 512 / W``). Both are non-standard for non-square images.
"""

COMPARES = ('<=', '<')

AVERAGINGS = ('point', 'image', 'category_mean', 'category_weighted')
"""How per-keypoint correctness becomes one number (pairs with no keypoints are left out):

* ``'point'``: pooled over every keypoint of every pair, ``sum(correct) / sum(K)`` (DIFT's and
  GeoAware's "per point"/"per keypoint", Hyperfeatures).
* ``'image'``: mean over pairs of the per-pair accuracy ``mean_pairs(sum_k correct / K)``
  (DIFT's "per image", GeoAware's per-image result).
* ``'category_mean'``: for each category the pooled per-point PCK of its pairs, then the
  unweighted mean over categories (SD-DINO's "Average"; DistillDIFT's SPair-71k table).
* ``'category_weighted'``: the same per-category per-point PCKs averaged with weights equal to
  each category's number of pairs (SD-DINO's "Weighted").
"""

AVERAGING_LABELS = dict(point='per_point', image='per_image', category_mean='category_mean',
                        category_weighted='category_weighted')

OPTION_DEFAULTS = dict(threshold='target_bbox', frame='original', frame_size=None,
                       threshold_scale='frame', compare='<=', averaging=('point', ),
                       alphas=None, note='')

PRESETS = {
    'dift': dict(
        threshold='target_bbox', frame='original', compare='<=', averaging=('image', 'point'),
        note='DIFT (Tsingularity/dift eval_spair): keypoints and threshold in original pixels, '
        'dist / max(bbox_w, bbox_h) <= alpha; prints "per image" and "per point".'),
    'sd_dino': dict(
        threshold='target_bbox', frame='padded', frame_size=840, compare='<',
        averaging=('category_mean', 'category_weighted'),
        note='SD-DINO (Junyi42/sd-dino pck_spair_pascal): preprocess_kps_pad to 840, threshold '
        'scaled alike, err < alpha * thr; per-category pooled-point PCK, "Average" over '
        'categories and "Weighted" by pairs per category.'),
    'geoaware_point': dict(
        threshold='target_bbox', frame='padded', frame_size=840, compare='<',
        averaging=('point', ),
        note='GeoAware-SC with KPT_RESULT: per-category per-point PCK weighted by keypoints '
        '(= global per-point PCK); the paper\'s Tab. 2 (unsupervised, following ASIC).'),
    'geoaware_image': dict(
        threshold='target_bbox', frame='padded', frame_size=840, compare='<',
        averaging=('image', ),
        note='GeoAware-SC without KPT_RESULT: per-image PCK weighted by pairs (= global '
        'per-image mean); the paper\'s Tab. 3 and the README\'s 85.6.'),
    'distilldift_release': dict(
        threshold='target_bbox', frame='stretched', frame_size=840, threshold_scale='y',
        compare='<', averaging=('point', 'category_mean'),
        note='DistillDIFT release eval (GeoAware pipeline, NO_PADDING, KPT_RESULT): keypoints '
        'stretched to 840 x 840, threshold max(bbox_w, bbox_h) * 840 / H_orig (non-standard), '
        'per point; the project page reports SPair-71k averaged over categories.'),
    'hyperfeatures': dict(
        threshold='target_bbox', frame='original', compare='<=', averaging=('point', ),
        note='Diffusion Hyperfeatures (train_hyperfeatures.validate, pck_bbox): predictions '
        'rescaled to the original image, dist <= alpha * max(bbox_w, bbox_h), pooled over '
        'all keypoints.'),
    'hyperfeatures_img': dict(
        threshold='image', frame='original', compare='<=', averaging=('point', ),
        note='Diffusion Hyperfeatures\' pck_img: as "hyperfeatures" with alpha * max(W, H) of '
        'the target image.'),
}
"""Named option sets reproducing each reference's protocol (sources in each ``note``; see
``/work/shared/reference/correspondence.md`` section 3)."""


def _names(values):
    return ', '.join(repr(v) for v in values)


def _check_choice(what, value, choices, hint=''):
    if value not in choices:
        raise ValueError(f'{what}={value!r} is not a valid choice; expected one of '
                         f'{_names(choices)}.{hint}')


def resolve_options(spec):
    """A preset name or an options dict → the complete, validated options of one protocol.

    ``spec``: a key of :data:`PRESETS`, or a dict of options (keys of ``OPTION_DEFAULTS`` plus
    ``name``, and optionally ``preset`` naming a preset to start from). A dict without ``name`` is
    named ``'custom'``. Returns a dict with ``name`` and every option, ``averaging`` a tuple.
    """
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(
                f'PCK preset {spec!r} is unknown; the presets are {_names(PRESETS)}. Pass one of '
                'them, or a dict of options (threshold, frame, frame_size, threshold_scale, '
                'compare, averaging, alphas) with a name, optionally starting from '
                "preset='<one of the above>'.")
        options = dict(OPTION_DEFAULTS, **PRESETS[spec])
        options['name'] = spec
    elif isinstance(spec, dict):
        spec = dict(spec)
        base = spec.pop('preset', None)
        name = spec.pop('name', base or 'custom')
        unknown = sorted(set(spec) - set(OPTION_DEFAULTS))
        if unknown:
            raise ValueError(
                f'PCK options {unknown} are unknown; the options are '
                f"{_names(['name', 'preset'] + list(OPTION_DEFAULTS))}.")
        options = dict(OPTION_DEFAULTS)
        if base is not None:
            options = resolve_options(base)
        options.update(spec)
        options['name'] = name
    else:
        raise ValueError(f'a PCK protocol is a preset name or a dict of options, got '
                         f'{type(spec).__name__} {spec!r}; the presets are {_names(PRESETS)}.')
    _check_choice('threshold', options['threshold'], THRESHOLDS,
                  ' Use the keypoint boxes for datasets without object boxes (PF-WILLOW) and '
                  "'image' for PF-PASCAL.")
    _check_choice('frame', options['frame'], FRAMES)
    _check_choice('threshold_scale', options['threshold_scale'], THRESHOLD_SCALES)
    _check_choice('compare', options['compare'], COMPARES)
    if options['frame'] != 'original' and options['frame_size'] is None:
        raise ValueError(f"PCK protocol {options['name']!r}: frame={options['frame']!r} needs "
                         'frame_size (an int S or (W, H)); only the original frame has none.')
    averaging = options['averaging']
    averaging = (averaging, ) if isinstance(averaging, str) else tuple(averaging)
    if not averaging:
        raise ValueError(f"PCK protocol {options['name']!r} has an empty averaging; expected "
                         f'some of {_names(AVERAGINGS)}.')
    for mode in averaging:
        _check_choice('averaging', mode, AVERAGINGS)
    options['averaging'] = averaging
    if options['alphas'] is not None:
        options['alphas'] = tuple(float(a) for a in options['alphas'])
    return options


def _kps(value, what):
    if value is None:
        raise ValueError(f'the sample has no {what}.')
    if hasattr(value, 'detach'):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0:
        arr = arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f'{what} must be [K, 2] (x, y), got shape {arr.shape}.')
    return arr


def _imsize(sample, side):
    size = sample.get(f'{side}_imsize')
    if size is None:
        raise ValueError(f'the sample {sample.get("pair_id", "?")!r} has no {side}_imsize '
                         '(W, H), which the PCK frame and threshold need.')
    return tuple(float(v) for v in tuple(size)[:2])


def to_frame(kps, image_size, frame='original', frame_size=None):
    """Original-pixel keypoints ``[K, 2]`` of an image of ``image_size = (W, H)`` → ``frame``
    (float64 numpy)."""
    kps = _kps(kps, 'keypoints')
    if frame == 'original':
        return kps
    return frame_transform(image_size, frame, frame_size).to_frame(kps).numpy()


def reference_length(sample, threshold='target_bbox', frame='original', frame_size=None,
                     threshold_scale='frame'):
    """The length ``L`` of the threshold ``alpha * L`` (:data:`THRESHOLDS`), in ``frame`` pixels
    scaled as ``threshold_scale`` says (:data:`THRESHOLD_SCALES`).

    ``sample``: a pair dict (the data contract (``correspondence/README.md``)). Raises ``ValueError`` when the
    threshold needs a box the sample does not have.
    """
    _check_choice('threshold', threshold, THRESHOLDS)
    _check_choice('threshold_scale', threshold_scale, THRESHOLD_SCALES)
    side = 'src' if threshold.startswith('source') else 'trg'
    size = _imsize(sample, side)
    if threshold.endswith('bbox'):
        box = sample.get(f'{side}_bbox')
        if box is None:
            raise ValueError(
                f'PCK threshold {threshold!r} needs the {side}_bbox of pair '
                f'{sample.get("pair_id", "?")!r}, which is None (the dataset has no object '
                "boxes?); use threshold='target_kps' or 'source_kps' (a keypoint box, "
                "PF-WILLOW) or 'image' (PF-PASCAL) for such datasets.")
        x1, y1, x2, y2 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1)[:4])
        corners = np.array([[x1, y1], [x2, y2]])
    elif threshold.endswith('kps'):
        corners = _kps(sample.get(f'{side}_kps'), f'{side}_kps')
        if len(corners) == 0:
            raise ValueError(f'PCK threshold {threshold!r}: pair '
                             f'{sample.get("pair_id", "?")!r} has no keypoints to box.')
    else:
        corners = np.array([[0.0, 0.0], [size[0], size[1]]])
    if threshold_scale == 'frame' and frame != 'original':
        corners = to_frame(corners, size, frame, frame_size)
    extent = corners.max(axis=0) - corners.min(axis=0)
    length = float(max(extent))
    if threshold_scale in ('x', 'y') and frame != 'original':
        transform = frame_transform(size, frame, frame_size)
        length = transform.length_to_frame(length, axis=threshold_scale)
    return length


def pck_threshold(sample, source='target_bbox', frame='original', frame_size=None, alpha=0.1,
                  threshold_scale='frame'):
    """``alpha * L`` in ``frame`` pixels (:func:`reference_length` with ``threshold=source``)."""
    return float(alpha) * reference_length(sample, source, frame, frame_size, threshold_scale)


def pair_distances(sample, frame='original', frame_size=None):
    """Euclidean distances ``[K]`` between ``pred_kps`` and ``trg_kps``, in the target's frame."""
    size = _imsize(sample, 'trg')
    gt = to_frame(_kps(sample.get('trg_kps'), 'trg_kps'), size, frame, frame_size)
    pred = to_frame(_kps(sample.get('pred_kps'), 'pred_kps'), size, frame, frame_size)
    if pred.shape != gt.shape:
        raise ValueError(f'pred_kps {pred.shape} and trg_kps {gt.shape} of pair '
                         f'{sample.get("pair_id", "?")!r} differ in shape; the prediction '
                         'needs one point per source keypoint.')
    return np.linalg.norm(pred - gt, axis=-1)


def correct(pred, gt, thr, compare='<='):
    """Boolean ``[K]``: is each predicted point within ``thr`` of its ground truth?

    ``pred``, ``gt``: ``[K, 2]`` in one frame; ``thr``: a scalar or ``[K]`` in that frame's
    pixels; ``compare``: ``'<='`` (DIFT, Hyperfeatures) or ``'<'`` (SD-DINO, GeoAware,
    DistillDIFT's release).
    """
    dist = np.linalg.norm(_kps(pred, 'pred') - _kps(gt, 'gt'), axis=-1)
    return within(dist, thr, compare)


def within(dist, thr, compare='<='):
    """Boolean ``dist <= thr`` or ``dist < thr`` (:data:`COMPARES`)."""
    _check_choice('compare', compare, COMPARES)
    dist = np.asarray(dist, dtype=np.float64)
    return dist <= thr if compare == '<=' else dist < thr


def aggregate(records, averaging='point'):
    """One PCK (a fraction in [0, 1]) from per-pair correctness, as ``averaging`` says.

    ``records``: an iterable of dicts with ``category`` (str) and ``correct`` (bool ``[K]``).
    Modes (:data:`AVERAGINGS`); pairs with ``K = 0`` are left out of every mode:

    * ``'point'``: ``sum_pairs sum_k correct / sum_pairs K``.
    * ``'image'``: ``mean_pairs(mean_k correct)``.
    * ``'category_mean'``: ``mean_c P_c`` with ``P_c`` the pooled per-point PCK of category ``c``.
    * ``'category_weighted'``: ``sum_c n_c P_c / sum_c n_c`` with ``n_c`` pairs in ``c``.

    Returns NaN when no pair has a keypoint.
    """
    _check_choice('averaging', averaging, AVERAGINGS)
    rows = [(r['category'], np.asarray(r['correct'], dtype=bool).reshape(-1)) for r in records]
    rows = [(c, k) for c, k in rows if k.size]
    if not rows:
        return float('nan')
    if averaging == 'point':
        return float(sum(int(k.sum()) for _, k in rows) / sum(k.size for _, k in rows))
    if averaging == 'image':
        return float(np.mean([k.mean() for _, k in rows]))
    per_cat = per_category([dict(category=c, correct=k) for c, k in rows], 'point')
    pairs = {}
    for cat, _ in rows:
        pairs[cat] = pairs.get(cat, 0) + 1
    values = np.array([per_cat[c] for c in per_cat])
    if averaging == 'category_mean':
        return float(values.mean())
    weights = np.array([pairs[c] for c in per_cat], dtype=np.float64)
    return float((values * weights).sum() / weights.sum())


def per_category(records, averaging='point'):
    """``{category: PCK}`` (fractions), each category's pairs aggregated with ``averaging``
    (``'point'`` or ``'image'``), categories in order of first appearance."""
    if averaging not in ('point', 'image'):
        raise ValueError(f"per-category averaging={averaging!r}; expected 'point' or 'image'.")
    groups = {}
    for r in records:
        groups.setdefault(r['category'], []).append(r)
    out = {}
    for cat, group in groups.items():
        value = aggregate(group, averaging)
        if not np.isnan(value):
            out[cat] = value
    return out
