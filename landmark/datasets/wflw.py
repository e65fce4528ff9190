"""WFLW in the COCO-style files of ``tools/dataset_converters/wflw.py``, with attribute flags."""
import os.path as osp

from mmpose.datasets.datasets.base import BaseCocoStyleDataset
from mmpose.registry import DATASETS

# The six WFLW attribute flags, in the order of the official annotation lines, named as the
# subset files ``face_landmarks_wflw_test_<name>.json`` are.
WFLW_ATTRIBUTES = ('largepose', 'expression', 'illumination', 'makeup', 'occlusion', 'blur')

METAINFO_FILE = osp.join(
    osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs', '_base_', 'datasets', 'wflw.py')


@DATASETS.register_module()
class WFLWAttributeDataset(BaseCocoStyleDataset):
    """WFLW faces with their box (``bbox``, xywh), 98 landmarks and six attribute flags.

    Each data info carries the flags of its face as ``wflw_attributes`` (a dict from the names of
    :data:`WFLW_ATTRIBUTES` to 0/1; absent when the annotation file has none). List
    ``'wflw_attributes'`` in ``PackPoseInputs(meta_keys=...)`` to hand them to
    :class:`~landmark.evaluation.WFLWNMEMetric`, which reports every attribute subset from them.

    The metainfo (flip pairs, colours, links) is ``landmark/configs/_base_/datasets/wflw.py``.
    All other arguments are those of mmpose's ``BaseCocoStyleDataset``.
    """

    METAINFO: dict = dict(from_file=METAINFO_FILE)

    def parse_data_info(self, raw_data_info):
        data_info = super().parse_data_info(raw_data_info)
        if data_info is None:
            return None
        attributes = raw_data_info['raw_ann_info'].get('attributes')
        if attributes is not None:
            data_info['wflw_attributes'] = {k: int(v) for k, v in attributes.items()}
        return data_info
