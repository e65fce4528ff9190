# WFLW 98-point facial landmarks: the dataset metainfo mmpose reads (`dataset_info`), written out
# from the mark-up of https://wywu.github.io/projects/LAB/WFLW.html.
#
# Point ids by facial part; "right"/"left" are the subject's, so the subject's right eye (60-67)
# is on the left of the image:
#    0-32  face contour, from the right temple over the chin (16) to the left temple
#   33-41  right eyebrow: upper edge 33-37 (outer to inner), lower edge 38-41 (inner to outer)
#   42-50  left eyebrow:  upper edge 42-46 (inner to outer), lower edge 47-50 (outer to inner)
#   51-54  nose bridge, top to tip                          55-59  nose base, right to left
#   60-67  right eye: 60 outer corner, 61-63 upper lid, 64 inner corner, 65-67 lower lid
#   68-75  left eye:  68 inner corner, 69-71 upper lid, 72 outer corner, 73-75 lower lid
#   76-87  outer lip: 76 right corner, 77-81 upper edge, 82 left corner, 83-87 lower edge
#   88-95  inner lip: 88 right corner, 89-91 upper edge, 92 left corner, 93-95 lower edge
#   96, 97 right and left pupil
# The NME of WFLW is normalised by the distance of the outer eye corners 60 and 72.
#
# A horizontal flip maps each point to its mirror image (`swap`): the contour runs from one side
# to the other, so i <-> 32 - i; for the paired parts the order along the mirrored part is the
# mirror of the order along the original one. Points on the symmetry axis (chin 16, nose bridge
# 51-54, nose tip 57, lip middles 79, 85, 90, 94) are their own mirror.

_PARTS = [  # (part, first id, last id, colour as RGB); consecutive points are linked
    ('contour', 0, 32, [255, 128, 0]),
    ('right_eyebrow', 33, 41, [0, 255, 128]),
    ('left_eyebrow', 42, 50, [0, 255, 128]),
    ('nose_bridge', 51, 54, [255, 51, 255]),
    ('nose_base', 55, 59, [255, 51, 255]),
    ('right_eye', 60, 67, [51, 153, 255]),
    ('left_eye', 68, 75, [51, 153, 255]),
    ('outer_lip', 76, 87, [255, 51, 51]),
    ('inner_lip', 88, 95, [255, 51, 51]),
    ('right_pupil', 96, 96, [255, 255, 0]),
    ('left_pupil', 97, 97, [255, 255, 0]),
]
_CLOSED_PARTS = ('right_eyebrow', 'left_eyebrow', 'right_eye', 'left_eye', 'outer_lip',
                 'inner_lip')

_MIRROR_PAIRS = (
    [(i, 32 - i) for i in range(16)]  # contour
    + [(33 + i, 46 - i) for i in range(5)]  # eyebrows, upper edge
    + [(38 + i, 50 - i) for i in range(4)]  # eyebrows, lower edge
    + [(55, 59), (56, 58)]  # nose base
    + [(60 + i, 72 - i) for i in range(5)]  # eyes: corners and upper lids
    + [(65 + i, 75 - i) for i in range(3)]  # eyes: lower lids
    + [(76 + i, 82 - i) for i in range(3)]  # outer lip: corners and upper edge
    + [(83, 87), (84, 86)]  # outer lip: lower edge
    + [(88, 92), (89, 91), (93, 95)]  # inner lip
    + [(96, 97)])  # pupils
_MIRROR = dict(_MIRROR_PAIRS + [(b, a) for a, b in _MIRROR_PAIRS])
_COLOUR = {i: colour for _, first, last, colour in _PARTS for i in range(first, last + 1)}

_LINKS = []
for _part, _first, _last, _colour in _PARTS:
    _ids = list(range(_first, _last + 1))
    if _part in _CLOSED_PARTS:
        _ids.append(_first)
    _LINKS += [(a, b, _colour) for a, b in zip(_ids[:-1], _ids[1:])]

dataset_info = dict(
    dataset_name='wflw',
    paper_info=dict(
        author='Wu, Wayne and Qian, Chen and Yang, Shuo and Wang, Quan and Cai, Yici and '
        'Zhou, Qiang',
        title='Look at Boundary: A Boundary-Aware Face Alignment Algorithm',
        container='CVPR',
        year='2018',
        homepage='https://wywu.github.io/projects/LAB/WFLW.html',
    ),
    keypoint_info={
        i: dict(name=f'kpt-{i}', id=i, color=_COLOUR[i], type='',
                swap=f'kpt-{_MIRROR[i]}' if i in _MIRROR else '')
        for i in range(98)
    },
    skeleton_info={
        n: dict(link=(f'kpt-{a}', f'kpt-{b}'), id=n, color=colour)
        for n, (a, b, colour) in enumerate(_LINKS)
    },
    joint_weights=[1.0] * 98,
    sigmas=[],
)
