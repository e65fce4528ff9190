# RepFusion on Tiny-ImageNet, random timestep: each image at t ~ U[0, 1000).
_base_ = ['./repfusion-fixed-t100_resnet18_1xb64-200e_tinyimagenet.py']
model = dict(timestep_sampler=dict(_delete_=True, type='UniformTimestep', low=0, high=1000))
