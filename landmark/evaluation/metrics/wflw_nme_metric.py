"""WFLW's NME on the full test set and on its six attribute subsets, in one evaluation."""
import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger
from mmpose.registry import METRICS

from ...datasets.wflw import WFLW_ATTRIBUTES
from ..functional.nme import WFLW_NORM_INDICES, nme_per_sample


@METRICS.register_module()
class WFLWNMEMetric(BaseMetric):
    """Inter-ocular NME over all faces (``NME``) and over each attribute subset (``NME/<name>``).

    The attribute flags of a face come from its data sample's metainfo ``attribute_key``
    (``WFLWAttributeDataset`` provides them as ``wflw_attributes``; keep that name in
    ``PackPoseInputs(meta_keys=...)``). A subset with no face in the evaluated data is left out
    of the results, so on a subset file (``face_landmarks_wflw_test_blur.json``) ``NME`` is the
    NME of that subset. Without attribute flags only ``NME`` is reported.

    Values are fractions of the inter-ocular distance, as mmpose's ``NME`` metric gives them
    (papers print them multiplied by 100).

    Args:
        norm_indices (tuple[int, int]): ground-truth points whose distance normalises the error;
            WFLW's outer eye corners (60, 72) by default.
        subsets (Sequence[str]): attribute names to report.
        attribute_key (str): the metainfo key holding a face's ``{name: 0/1}`` flags.
        collect_device, prefix: as for mmengine's ``BaseMetric``.
    """
    default_prefix = ''  # keys stay 'NME', 'NME/<subset>' (save_best='NME'); no warning

    def __init__(self, norm_indices=WFLW_NORM_INDICES, subsets=WFLW_ATTRIBUTES,
                 attribute_key='wflw_attributes', collect_device='cpu', prefix=None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        if len(norm_indices) != 2:
            raise ValueError(f'norm_indices must be two point ids, got {norm_indices}')
        self.norm_indices = tuple(int(i) for i in norm_indices)
        self.subsets = tuple(subsets)
        self.attribute_key = attribute_key

    def process(self, data_batch, data_samples):
        for sample in data_samples:
            pred = np.asarray(sample['pred_instances']['keypoints'])
            gt_instances = sample['gt_instances']
            gt = np.asarray(gt_instances['keypoints'])
            if pred.shape[0] != 1 or gt.shape[0] != 1:
                raise ValueError(
                    f'{type(self).__name__} scores one face per data sample (top-down); got '
                    f'{pred.shape[0]} predicted and {gt.shape[0]} annotated instances.')
            visible = gt_instances.get('keypoints_visible')
            if visible is not None:
                visible = np.asarray(visible)
                if visible.ndim == 3:  # (1, K, 1) or (1, K, 2): one flag per point
                    visible = visible[..., 0]
                visible = visible.reshape(1, -1) > 0
            nme = nme_per_sample(pred[0, :, :2], gt[0, :, :2], self.norm_indices, visible)
            attributes = sample.get(self.attribute_key)
            self.results.append(dict(
                nme=float(nme[0]),
                attributes=None if attributes is None else {k: int(v)
                                                            for k, v in attributes.items()}))

    def compute_metrics(self, results):
        logger = MMLogger.get_current_instance()
        nme = np.array([r['nme'] for r in results])
        metrics = {'NME': float(nme.mean())}
        lines = [f'full: {100 * nme.mean():.3f} ({len(nme)} faces)']
        without = sum(r['attributes'] is None for r in results)
        if without:
            logger.warning(
                f'{without} of {len(results)} faces carry no {self.attribute_key!r}; the '
                f'attribute subsets count only the others. Use WFLWAttributeDataset on files of '
                f"tools/dataset_converters/wflw.py and keep '{self.attribute_key}' in "
                f'PackPoseInputs(meta_keys=...).')
        for name in self.subsets:
            flagged = np.array([bool(r['attributes'] and r['attributes'].get(name, 0))
                                for r in results])
            if flagged.any():
                metrics[f'NME/{name}'] = float(nme[flagged].mean())
                lines.append(f'{name}: {100 * nme[flagged].mean():.3f} ({flagged.sum()} faces)')
            else:
                lines.append(f'{name}: no face')
        logger.info('WFLW NME (x100, inter-ocular): ' + ', '.join(lines))
        return metrics
