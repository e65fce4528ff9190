# ComVG test (compositional_visual_genome.csv, 5,400 rows): each sentence against its image and
# a hard-negative image that differs in the subject (1,536 rows), the object (2,584) or the verb
# (1,280): image retrieval among 2 (accuracy). One run reports the three subsets (the
# reference's ComVG_sub / ComVG_obj / ComVG_verb runs); one subset alone:
#   --cfg-options test_dataloader.dataset.subset=verb
# Layout: data/Visual_Genome/{compositional_visual_genome.csv, vg_concept/<image_id>.jpg}.
_base_ = ['./itm_test.py']
test_dataloader = dict(
    dataset=dict(type='ComVGDataset', data_root='data/Visual_Genome', split='test'))
