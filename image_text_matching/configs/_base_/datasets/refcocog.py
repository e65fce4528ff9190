# RefCOCOg (REFER's Google split files) as DSD evaluates it: every referring sentence against 9
# sentences of other refs (seeded; never equal to it), text retrieval among 10 for the ref's
# COCO image (R@1, R@5). The evaluation split is every question after the first 5% (90,260 of
# 95,010), as the reference; `refs(google).p` is read without running it (or convert it once:
# tools/dataset_converters/refcocog_refs_to_json.py, then dataset.refs='refs(google).json').
# Layout: data/refcocog/{refs(google).p, instances.json, images/train2014/}.
_base_ = ['./itm_test.py']
test_dataloader = dict(
    dataset=dict(type='RefCOCOgDataset', data_root='data/refcocog', split='test',
                 few_shot=0.05, num_negatives=9, negative_seed=0))
