# The L1 x10 variant of the dense loss.
_base_ = ['./repfusion-dense-l2_resnet18_4xb16-200e_celebahq.py']
model = dict(distill_pairs=dict(feat=dict(loss=dict(_delete_=True, type='DenseL1Loss',
                                                    loss_weight=10.0))))
