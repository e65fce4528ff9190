# ComVG few-shot training: the first 5% of comvg_train.csv (DSD's Google Drive folder; images in
# Visual Genome's VG_100K/), image retrieval among 2; test on the whole ComVG test file.
_base_ = ['./comvg.py', './itm_train.py']
train_dataloader = dict(
    dataset=dict(type='ComVGDataset', data_root='data/Visual_Genome', split='train',
                 few_shot=0.05))
val_dataloader = dict(
    dataset=dict(type='ComVGDataset', data_root='data/Visual_Genome', split='train',
                 few_shot=0.05))
