# DistillDIFT's unsupervised teacher (Fundel et al., WACV'25; `distilled_us`) precomputed once for
# COCO train2017: SDXL-Turbo up_blocks.0 averaged over t = 51, 101, 151, 201 at 980 px (31 x 31
# cells, 1280 ch) fused with DINOv2-B/14-reg at 434 px (31 x 31, 768 ch), as
# _base_/models/teacher_sdxl-turbo-dinov2-reg-b14.py defines it, plus each image's DINOv2-reg CLS
# embedding for retrieval pairing (UnlabeledPairsDataset(pairing='retrieval', top_k=10,
# num_pairs=12000)).
#
#   C=correspondence/configs/precompute
#   python tools/precompute_teacher_features.py \
#       $C/sdxl-turbo-t51-201-dinov2-reg-b14_434px_coco-train2017.py \
#       --out work_dirs/teacher_shards/coco-train2017 --batch-size 4
#   (several GPUs: torchrun --nproc_per_node 4 tools/precompute_teacher_features.py ... \
#    --launcher pytorch)
#
# Stored per image: 31 x 31 x 2048 float16 = 3.9 MB, so all 118,287 images take ~460 GB; set
# precompute.num_images (a seeded subset) to bound it. Not run with the real weights yet.
#
# Differences from DistillDIFT's code, on purpose or for lack of a verified value:
# * The frame is the training pipeline's: the image stretched to 434 x 434 (the student's input).
#   The teacher resizes that frame to 980 px for SDXL (FusedExtractor input_sizes), so SDXL sees
#   the 434 px frame upsampled, not the original image resized to 980: less detail from images
#   larger than 434 px.
# * Prompt '' (the teacher's default): DistillDIFT's template 'a photo of a {category}' needs a
#   category, which unlabeled COCO images do not have [unverified what the release passes for
#   COCO]. For an ImageNet-style folder, precompute.categories='folder' with the template back.
# * Fusion, SDXL conditioning, DINOv2 layer: see the _base_ teacher configs (per-cell L2
#   normalisation instead of the release's width-axis one; SDXL's added conditioning applied).
# * Keys are image-root-relative paths (DistillDIFT: basenames), features are stored float16 by
#   default (--dtype float32 available), one seeded noise draw per timestep.
# * The CLS embedding is taken on the 434 px frame [unverified: the input size of DistillDIFT's
#   embed.py].
_base_ = ['../_base_/models/teacher_sdxl-turbo-dinov2-reg-b14.py']
teacher = _base_.teacher_sd_dino
teacher.extractors[0].prompt_template = None
teacher.extractors[0].teacher.cache_dir = None  # the shards are the cache
embedder = dict(type='DINOv2ClsEmbedder', pretrained='facebook/dinov2-with-registers-base')
precompute = dict(
    image_root='data/coco/train2017',
    size=(434, 434),
    frame='stretched',
    resample='bilinear',
    extensions=('.jpg', ),
    num_images=None,
    seed=0,
    categories=None)
