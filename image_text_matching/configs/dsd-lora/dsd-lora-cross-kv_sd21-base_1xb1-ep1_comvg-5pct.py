# The ComVG prompt learning of dsd-lora_sd21-base_1xb1-ep1_comvg-5pct.py with LoRA on the
# cross-attention keys and values only (attn2.to_k / attn2.to_v: Custom-Diffusion-style
# "attention-based prompt learning", as the paper's wording suggests; the released code trains
# q/k/v/out of every attention layer). Same data, schedule, loss and test.
#   bash tools/dist_train.sh image_text_matching/configs/dsd-lora/dsd-lora-cross-kv_sd21-base_1xb1-ep1_comvg-5pct.py 1
_base_ = ['./dsd-lora_sd21-base_1xb1-ep1_comvg-5pct.py']
model = dict(lora=dict(targets='cross_kv'))
