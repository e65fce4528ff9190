# Discriminative Stable Diffusion (DSD, "Discffusion", He et al., arXiv 2305.10722) on Stable
# Diffusion 2.1-base, as the reference evaluates it: the cross-attention score (log-sum-exp of
# the logits over the text tokens) of the last cross-attention block of down / mid / up (6
# layers at 512 px), plus the Diffusion-ITM term d_uncond - d_cond (the reference's default
# "bias"), averaged over `num_timesteps` steps evenly spaced in [10, 990), with common random
# noise per step for all candidates of a question and a VAE posterior *sample* as latent.
# Our defaults where the reference has a defect (both options exist for comparison):
# per-sample reduction (`reduction='batch_mean_compat'` = the reference's batch-wide attention
# mean) and padding tokens masked (`mask_padding=False` = the reference).
# Offline: point `pretrained` at a local pipeline folder, e.g.
#   --cfg-options model.scorer.pretrained=/models/stable-diffusion-2-1-base
# fp16 as the reference's inference (a GPU setting); on CPU use model.scorer.dtype=float32.
model = dict(
    type='DSDMatcher',
    scorer=dict(
        type='DSDScorer',
        pretrained='stabilityai/stable-diffusion-2-1-base',
        layers='dsd_default',
        num_timesteps=30,            # the reference's --sampling_time_steps default
        timestep_range=(10, 990),
        noise_seed=0,
        latent='sample',
        mask_padding=True,
        reduction='per_sample',
        itm_unconditional_normalise=False,  # only the `itm` score; `dsd` always uses d_uncond
        max_batch=32,
        image_size=None,             # the datasets already give 512 x 512 images
        dtype='float16'),
    # lora: none here (zero-shot); the prompt-learning configs add
    # lora=dict(targets='all_attention' | 'cross_kv', rank=4, alpha=None)
    loss=dict(type='MarginRankingLoss', margin=0.1),
    score='dsd',
    lora_weights=None,               # a folder of saved LoRA weights to evaluate
    gradient_checkpointing=True)
