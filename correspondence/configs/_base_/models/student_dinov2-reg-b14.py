# A trainable DINOv2-B/14 with registers (DistillDIFT's student): x_norm_patchtokens (layer=-1),
# rank-8 LoRA on the query and value projections of all 12 blocks (dropout 0.05 on the LoRA
# input), only the LoRA factors train. Configs switch `model.extractor.mode` to 'full' (whole
# backbone) or 'upscaler' (frozen backbone + trainable 2x upscaler head).
model = dict(
    type='CorrespondenceDistiller',
    extractor=dict(type='DINOv2Student', pretrained='facebook/dinov2-with-registers-base',
                   layer=-1, mode='lora',
                   lora=dict(rank=8, alpha=8, targets=('query', 'value'), dropout=0.05)),
    # evaluation: the release's window soft-argmax, -inf outside the window
    matcher=dict(type='SoftArgmaxMatcher', window=5, beta=0.02, mask='inf'),
    data_preprocessor=dict(type='PairDataPreprocessor'))
