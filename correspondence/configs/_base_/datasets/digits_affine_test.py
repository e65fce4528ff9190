# The digits demo's pairs (tools/demo_correspondence.py): held-out scikit-learn digits, 64x64,
# each against a seeded random affine warp of itself, written once as an SPair-71k-format
# release (exact ground truth; keypoints on the strokes, bbox = the digit's stroke box).
_base_ = ['./pairs_test.py']
test_dataloader = dict(
    batch_size=8,
    num_workers=0,
    dataset=dict(type='SPair71kDataset',
                 data_root='work_dirs/demo_correspondence/digits_affine', split='test',
                 # the categories of this release (SPair-71k's 18 otherwise)
                 metainfo=dict(classes=('0', '1', '2', '3', '4', '5', '6', '7', '8', '9')),
                 # the images are 64x64 already: keep them (the model sees original pixels)
                 pipeline=[dict(type='LoadImagePair'), dict(type='PackPair')]))
# DIFT's protocol (threshold on the target bbox, original pixels, <=), per point and per image;
# no per-category table in the log (the ten digits are one task here).
test_evaluator = dict(type='PCKMetric', presets=['dift'], alphas=(0.05, 0.1, 0.2),
                      per_category=False)
