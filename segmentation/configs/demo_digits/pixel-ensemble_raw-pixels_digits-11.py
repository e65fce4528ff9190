# Baseline of the segmentation demo: the same ten-MLP ensemble on each pixel's own RGB value
# (RawPixelFeatures: 3-d features), same 20 labelled images and test digits.
_base_ = ['./pixel-ensemble_ddpm-digits-b1-3-5-t50-150_digits-11.py']
model = dict(backbone=dict(_delete_=True, type='RawPixelFeatures', image_size=32))
