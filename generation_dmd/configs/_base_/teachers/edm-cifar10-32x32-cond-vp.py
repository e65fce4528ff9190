# EDM's CIFAR-10 class-conditional teacher (EDMPrecond + DDPM++ SongUNet, 35.9M weights; FID 1.79
# with 18 Heun steps = 35 network evaluations). Made once, on a connected machine:
#   wget https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-cifar10-32x32-cond-vp.pkl
#   python tools/convert/edm_to_safetensors.py edm-cifar10-32x32-cond-vp.pkl \
#       data/edm/edm-cifar10-32x32-cond-vp
# (the converter runs nothing from the pickle; it writes config.json + model.safetensors).
teacher = dict(type='load_edm', folder='data/edm/edm-cifar10-32x32-cond-vp')
