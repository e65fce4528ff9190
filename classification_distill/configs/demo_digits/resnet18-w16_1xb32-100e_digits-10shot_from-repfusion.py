# Step 3 from a distilled student: identical to the scratch config except the backbone's init.
_base_ = ['./resnet18-w16_1xb32-100e_digits-10shot_scratch.py']
distilled_checkpoint = 'work_dirs/demo/repfusion_fixed_t/epoch_20.pth'
model = dict(backbone=dict(init_cfg=dict(
    type='Pretrained', checkpoint=distilled_checkpoint, prefix='student.backbone.')))
