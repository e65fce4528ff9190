# VQAv2 other (the reference's vqa_other): each row of vqa_text_test.csv (1,000 rows: a question
# with its answer, and the same question with 9 other answers) for its COCO val2014 image, text
# retrieval among 10 (R@1, R@5).
# Layout: data/vqav2/{vqa_text_test.csv, val2014/COCO_val2014_<12-digit id>.jpg}.
_base_ = ['./itm_test.py']
test_dataloader = dict(
    dataset=dict(type='VQAOtherDataset', data_root='data/vqav2', split='test'))
