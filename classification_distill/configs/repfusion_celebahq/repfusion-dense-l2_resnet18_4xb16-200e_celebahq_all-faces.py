# Option: distil on all CelebA-HQ faces, including those of the segmentation val/test splits
# (what the reference did). Label-free, but transductive: say so when you report numbers.
_base_ = ['./repfusion-dense-l2_resnet18_4xb16-200e_celebahq.py']
_faces = dict(type='CustomDataset', data_root=_base_.data_root, with_label=False,
              pipeline=_base_.train_pipeline)
train_dataloader = dict(dataset=dict(
    _delete_=True, type='ConcatDataset',
    datasets=[dict(_faces, data_prefix=f'img_dir/{split}') for split in ('train', 'val', 'test')]))
