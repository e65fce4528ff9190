# Winoground (facebook/winoground): 400 examples of two images and two captions with the same
# words in another order; Winoground's text, image and group scores, overall and per
# collapsed_tag (Object, Relation, Both). Not a DSD benchmark (Diffusion-ITM reports it).
# Layout: data/winoground/{examples.jsonl, images/ex_<id>_img_<k>.png} (the dataset
# repository's data/ folder with images.zip extracted).
_base_ = ['./itm_test.py']
test_dataloader = dict(
    dataset=dict(type='WinogroundDataset', data_root='data/winoground'))
