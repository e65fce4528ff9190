# The paper's original feature setting (before the reference's 3/9/2022 update) on bedroom_28:
# blocks [6, 7, 8, 9] at t = [50, 150, 250, 350]; everything else as the default config.
_base_ = ['./pixel-ensemble_adm-lsun-bedroom_1xb64-100e_bedroom-28.py']

model = dict(backbone=dict(blocks=[6, 7, 8, 9], steps=[50, 150, 250, 350]))
