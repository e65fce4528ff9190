"""Data transforms for face parsing."""
import mmcv
from mmseg.datasets.transforms import RandomFlip
from mmseg.registry import TRANSFORMS

from .celebamask_hq import CLASSES, LEFT_RIGHT_PAIRS, class_index

#: Flip directions that mirror the x axis and therefore turn a left part into a right part.
_MIRRORING = ('horizontal', 'diagonal')


@TRANSFORMS.register_module()
class RandomFlipSwapLR(RandomFlip):
    """mmseg's ``RandomFlip`` that also relabels left/right classes when it mirrors the image.

    Mirroring a face moves the person's left eye to where the right eye was; keeping the label
    ``l_eye`` on it would teach the model that left and right are indistinguishable (and cost the
    mIoU of every paired class). Whenever the chosen direction mirrors the x axis (``horizontal``
    or ``diagonal``), each pair in ``swap_classes`` trades labels in every segmentation map; a
    ``vertical`` flip relabels nothing. The image itself is flipped exactly as ``RandomFlip`` does.

    Args:
        prob (float | list[float]): flip probability, as in ``RandomFlip``.
        direction (str | list[str]): flip direction(s), as in ``RandomFlip``.
        swap_classes (sequence of pairs): classes that trade places, by name (looked up in
            ``classes``) or by label id. Defaults to the CelebAMask-HQ brows, eyes and ears.
        classes (sequence[str]): class names that the names in ``swap_classes`` refer to.
            Defaults to the 19 CelebAMask-HQ classes.
    """

    def __init__(self, prob=None, direction='horizontal', swap_classes=LEFT_RIGHT_PAIRS,
                 classes=CLASSES):
        super().__init__(prob=prob, direction=direction, swap_seg_labels=None)
        classes = tuple(classes)
        pairs = []
        for pair in swap_classes:
            if len(pair) != 2:
                raise ValueError(f'swap_classes needs pairs of classes, got {pair!r}')
            a, b = (c if isinstance(c, int) else class_index(c, classes) for c in pair)
            if a == b:
                raise ValueError(f'Cannot swap class {pair[0]!r} with itself')
            pairs.append((a, b))
        used = [c for pair in pairs for c in pair]
        if len(set(used)) != len(used):
            raise ValueError(f'A class appears in more than one swap pair: {swap_classes!r}')
        self.swap_pairs = tuple(pairs)

    def swap_labels(self, seg_map):
        """Return a copy of ``seg_map`` with the labels of every pair exchanged."""
        swapped = seg_map.copy()
        for a, b in self.swap_pairs:
            swapped[seg_map == a] = b
            swapped[seg_map == b] = a
        return swapped

    def _flip_seg_map(self, seg_map, direction):
        flipped = mmcv.imflip(seg_map, direction=direction)
        if direction in _MIRRORING:
            flipped = self.swap_labels(flipped)
        return flipped

    def _flip(self, results):
        super()._flip(results)
        if results.get('flip_direction') in _MIRRORING and results.get('seg_fields'):
            results['swap_seg_labels'] = [list(p) for p in self.swap_pairs]

    def __repr__(self):
        return (f'{type(self).__name__}(prob={self.prob}, direction={self.direction}, '
                f'swap_pairs={self.swap_pairs})')
