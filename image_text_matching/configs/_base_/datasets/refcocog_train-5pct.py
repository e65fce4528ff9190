# RefCOCOg few-shot training: the first 5% of the questions (4,750; the reference's released
# checkpoint, 47,500 steps, is 10 epochs of them), test on the rest.
_base_ = ['./refcocog.py', './itm_train.py']
train_dataloader = dict(
    dataset=dict(type='RefCOCOgDataset', data_root='data/refcocog', split='train',
                 few_shot=0.05, num_negatives=9, negative_seed=0))
val_dataloader = dict(
    dataset=dict(type='RefCOCOgDataset', data_root='data/refcocog', split='train',
                 few_shot=0.05, num_negatives=9, negative_seed=0))
