"""LoRA on the tiny SD UNet: target selection, frozen base, diffusers-loadable files, strict
loads."""
import os

import pytest
import torch

from image_text_matching.models.lora import (LORA_WEIGHT_NAME, LoRAError, add_lora, load_lora,
                                             lora_layers, lora_target_names, save_lora)
from tests.helpers.tiny_models import save_sd_pipeline


@pytest.fixture(scope='module')
def pipeline_dir(tmp_path_factory):
    return save_sd_pipeline(str(tmp_path_factory.mktemp('itm_lora') / 'sd'))


def _unet(folder):
    from diffusers import UNet2DConditionModel
    return UNet2DConditionModel.from_pretrained(os.path.join(folder, 'unet')).eval()


def _randomise_lora(unet, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if 'lora_' in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)


def _inputs():
    gen = torch.Generator().manual_seed(0)
    return (torch.randn(2, 4, 8, 8, generator=gen), torch.tensor([10, 600]),
            torch.randn(2, 8, 16, generator=gen))


def _out(unet):
    with torch.no_grad():
        return unet(*_inputs()).sample


def test_targets_select_the_expected_projections(pipeline_dir):
    unet = _unet(pipeline_dir)
    # the tiny UNet has 4 transformer blocks (down_blocks.0: 1, mid_block: 1, up_blocks.1: 2),
    # each with a self- (attn1) and a cross-attention (attn2)
    every = lora_target_names(unet, 'all_attention')
    assert len(every) == 4 * 2 * 4
    assert {n.rsplit('.attn', 1)[1] for n in every} == {
        f'{a}.{p}' for a in '12' for p in ('to_q', 'to_k', 'to_v', 'to_out.0')}
    cross = lora_target_names(unet, 'cross_kv')
    assert cross == sorted(f'{block}.transformer_blocks.0.attn2.{p}' for p in ('to_k', 'to_v')
                           for block in ('down_blocks.0.attentions.0', 'mid_block.attentions.0',
                                         'up_blocks.1.attentions.0', 'up_blocks.1.attentions.1'))
    explicit = lora_target_names(unet, ['mid_block.attentions.0.transformer_blocks.0.attn2.to_k',
                                        r'up_blocks\.1\..*\.attn1\.to_q'])
    assert explicit == ['mid_block.attentions.0.transformer_blocks.0.attn2.to_k',
                        'up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q',
                        'up_blocks.1.attentions.1.transformer_blocks.0.attn1.to_q']
    names = add_lora(unet, 'cross_kv', rank=2)
    assert names == cross and sorted(lora_layers(unet)) == cross


def test_unknown_targets_fail_with_the_available_projections(pipeline_dir):
    unet = _unet(pipeline_dir)
    with pytest.raises(LoRAError) as err:
        lora_target_names(unet, ['mid_block.attentions.0.transformer_blocks.0.attn3.to_k'])
    message = str(err.value)
    assert message.startswith("LoRA target 'mid_block.attentions.0.transformer_blocks.0.attn3."
                              "to_k' matches no linear layer of the UNet (UNet2DConditionModel)")
    assert ('The UNet has 32 attention projections: to_k, to_out.0, to_q, to_v of each of the 8 '
            'attention modules down_blocks.0.attentions.0.transformer_blocks.0.attn1') in message
    with pytest.raises(LoRAError, match=r"targets='cross_qv' is not a preset; use one of "
                                        r"\['all_attention', 'cross_kv'\]"):
        add_lora(unet, 'cross_qv')
    assert not hasattr(unet, 'peft_config') or not unet.peft_config  # nothing was injected


def test_only_lora_trains_and_starts_as_the_identity(pipeline_dir):
    unet = _unet(pipeline_dir)
    before = _out(unet)
    add_lora(unet, 'all_attention', rank=4)
    trainable = [n for n, p in unet.named_parameters() if p.requires_grad]
    assert len(trainable) == 32 * 2  # lora_A and lora_B of every adapted projection
    assert all('.lora_A.default.' in n or '.lora_B.default.' in n for n in trainable)
    assert torch.equal(_out(unet), before)  # lora_B starts at zero
    unet(*_inputs()).sample.square().mean().backward()
    assert all((p.grad is not None) == p.requires_grad for p in unet.parameters())


def test_saved_lora_loads_in_a_stock_pipeline_with_equal_output(pipeline_dir, tmp_path):
    from diffusers import StableDiffusionPipeline
    unet = _unet(pipeline_dir)
    plain = _out(unet)
    add_lora(unet, 'all_attention', rank=4, alpha=2.0)  # scale 0.5: the metadata must carry it
    _randomise_lora(unet)
    ours = _out(unet)
    assert not torch.allclose(ours, plain, atol=1e-3)
    (tmp_path / 'lora').mkdir()
    (tmp_path / 'lora' / 'notes.txt').write_text('kept')
    path = save_lora(unet, tmp_path / 'lora')
    assert path == str(tmp_path / 'lora' / LORA_WEIGHT_NAME)
    assert sorted(os.listdir(tmp_path / 'lora')) == ['notes.txt', LORA_WEIGHT_NAME]

    pipe = StableDiffusionPipeline.from_pretrained(pipeline_dir)
    pipe.load_lora_weights(str(tmp_path / 'lora'))
    assert torch.allclose(_out(pipe.unet.eval()), ours, atol=1e-5)

    fresh = _unet(pipeline_dir)  # our loader: adds the adapter from the file's metadata
    assert len(load_lora(fresh, tmp_path / 'lora')) == 32
    assert torch.allclose(_out(fresh), ours, atol=1e-6)
    assert all(p.requires_grad == ('lora_' in n) for n, p in fresh.named_parameters())


def test_load_refuses_files_that_do_not_fit(pipeline_dir, tmp_path):
    unet = _unet(pipeline_dir)
    add_lora(unet, 'cross_kv', rank=2)
    save_lora(unet, tmp_path / 'kv')
    other = _unet(pipeline_dir)
    add_lora(other, 'all_attention', rank=2)
    with pytest.raises(LoRAError, match=r'does not fit the LoRA adapter already on the UNet: the '
                                        r'file adapts 8 modules with rank \[2\], the adapter 32 '
                                        r'with rank 2'):
        load_lora(other, tmp_path / 'kv')
    (tmp_path / 'bin').mkdir()
    (tmp_path / 'bin' / 'pytorch_model.bin').write_bytes(b'not unpickled')
    with pytest.raises(LoRAError, match=r"has no pytorch_lora_weights.safetensors \(it holds "
                                        r"pytorch_model.bin\). It holds pickled weights"):
        load_lora(_unet(pipeline_dir), tmp_path / 'bin')
    with pytest.raises(LoRAError, match='no such file or folder'):
        load_lora(_unet(pipeline_dir), tmp_path / 'missing')
