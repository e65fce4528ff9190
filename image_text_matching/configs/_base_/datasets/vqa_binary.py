# VQAv2 binary (the reference's vqa_binary): each yes/no statement of test3.txt against its COCO
# val2014 image and 9 other images of the file (seeded), image retrieval among 10 (R@1, R@5).
# The reference's cached negatives instead: dataset.negatives_json='test3_neg_samples.json'.
# Layout: data/vqav2/{test3.txt, val2014/COCO_val2014_<id>.jpg}.
_base_ = ['./itm_test.py']
test_dataloader = dict(
    dataset=dict(type='VQABinaryDataset', data_root='data/vqav2', lines='test3.txt',
                 question_type='binary', num_negatives=9, negative_seed=0))
