"""CelebAMask-HQ face parsing: 19 classes (background + 18 face parts).

The label ids, the order in which the converter paints overlapping part masks, and the left/right
pairs a horizontal flip must swap are defined here once; the converter
(``tools/dataset_converters/celebamask_hq.py``), the flip transform and the configs read them from
this module.

Label ids follow the part order of the official CelebAMask-HQ release's mask-merging script (the
order most face-parsing papers use), so label maps produced here can be compared with other work:

====  ========  ====  ========  ====  ========  ====  ========
 id    class     id    class     id    class     id    class
====  ========  ====  ========  ====  ========  ====  ========
 0    background  5   r_eye     10    nose      15    neck_l
 1    skin        6   eye_g     11    mouth     16    cloth
 2    l_brow      7   l_ear     12    u_lip     17    hair
 3    r_brow      8   r_ear     13    l_lip     18    hat
 4    l_eye       9   ear_r     14    neck
====  ========  ====  ========  ====  ========  ====  ========

``l_``/``r_`` are the *person's* left and right as annotated in the release (``eye_g`` = glasses,
``ear_r`` = earring, ``neck_l`` = necklace).
"""
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

#: The 18 annotated parts, in label-id order (label id = position + 1; 0 is background).
PARTS = ('skin', 'l_brow', 'r_brow', 'l_eye', 'r_eye', 'eye_g', 'l_ear', 'r_ear', 'ear_r',
         'nose', 'mouth', 'u_lip', 'l_lip', 'neck', 'neck_l', 'cloth', 'hair', 'hat')

#: All 19 classes; index = label value in the ``ann_dir`` PNGs.
CLASSES = ('background', ) + PARTS

BACKGROUND_INDEX = 0

#: Order in which the converter paints the part masks: a pixel covered by several masks gets the
#: label of the part that comes *last* here. It is the label-id order, as in the official merging
#: script, so that e.g. glasses cover eyes, earrings cover ears, hair covers skin and a hat covers
#: hair. Kept as its own constant because the priority is a decision, not a side effect of the ids.
PAINT_ORDER = PARTS

#: Classes that trade places when the image is mirrored horizontally.
LEFT_RIGHT_PAIRS = (('l_brow', 'r_brow'), ('l_eye', 'r_eye'), ('l_ear', 'r_ear'))

#: One colour per class (RGB); left/right parts get neighbouring shades of one hue.
PALETTE = (
    (0, 0, 0),        # background
    (230, 180, 150),  # skin
    (30, 120, 60),    # l_brow
    (60, 170, 90),    # r_brow
    (0, 110, 255),    # l_eye
    (0, 190, 255),    # r_eye
    (210, 210, 0),    # eye_g
    (255, 110, 0),    # l_ear
    (255, 170, 70),   # r_ear
    (255, 0, 200),    # ear_r
    (130, 220, 0),    # nose
    (90, 0, 130),     # mouth
    (225, 20, 60),    # u_lip
    (160, 0, 40),     # l_lip
    (180, 110, 180),  # neck
    (0, 200, 160),    # neck_l
    (60, 60, 170),    # cloth
    (100, 60, 30),    # hair
    (255, 255, 130),  # hat
)

assert len(CLASSES) == len(PALETTE) == 19


def class_index(name, classes=CLASSES):
    """Label id of a class name; a clear error for an unknown name."""
    try:
        return classes.index(name)
    except ValueError:
        raise KeyError(f'Unknown class {name!r}; the classes are {list(classes)}') from None


@DATASETS.register_module()
class CelebAMaskHQDataset(BaseSegDataset):
    """CelebAMask-HQ as written by ``tools/dataset_converters/celebamask_hq.py``.

    Layout under ``data_root``: ``img_dir/{train,val,test}/<id>.jpg`` and
    ``ann_dir/{train,val,test}/<id>.png`` (single-channel uint8, values 0..18, see
    :data:`CLASSES`). Background is a real class (label 0), so ``reduce_zero_label`` must stay
    False; it is refused otherwise, because it would turn background into the ignore index and
    shift every part down by one.
    """

    METAINFO = dict(classes=CLASSES, palette=[list(c) for c in PALETTE])

    def __init__(self, img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=False,
                 **kwargs):
        if reduce_zero_label:
            raise ValueError(
                'CelebAMaskHQDataset labels background as class 0, a class that is trained and '
                'evaluated; reduce_zero_label=True would discard it and shift the 18 parts. '
                'Leave reduce_zero_label=False.')
        super().__init__(
            img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, reduce_zero_label=False,
            **kwargs)
