# VQAv2 few-shot training: the first 5% of vqa_text_train.csv (DSD's Google Drive folder; COCO
# train2014 images), text retrieval among 10; test on vqa_text_test.csv.
_base_ = ['./vqa_other.py', './itm_train.py']
train_dataloader = dict(
    dataset=dict(type='VQAOtherDataset', data_root='data/vqav2', split='train', few_shot=0.05))
val_dataloader = dict(
    dataset=dict(type='VQAOtherDataset', data_root='data/vqav2', split='train', few_shot=0.05))
