# Stable Diffusion 1.5 in GeoAware-SC's setting ("Telling Left from Right", Junyi42/GeoAware-SC
# preprocess_map.py): SD-DINO's extractor (same three decoder layers, empty prompt, posterior
# mean, one shared seeded noise draw) at t=50 instead of 100.
_base_ = ['./sd-1-5_sd-dino.py']
teacher = dict(timesteps=[50])
