"""Cross-attention capture: stock outputs kept, logits and heat maps against a hand computation,
the reference's default layers (tiny UNet and SD 2.1-base shape), layer-name errors, removal."""
import math

import pytest
import torch

from common.teachers import TeacherConfigError
from image_text_matching.models.attention_capture import (CrossAttentionCapture,
                                                          cross_attention_layers, default_layers,
                                                          resolve_layers, word_token_mask)

# The tiny SD UNet of tests/helpers/tiny_models.py (cross-attention in down_blocks.0, mid_block
# and up_blocks.1), built directly: no pipeline folder needed here.
TINY_UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                 block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=16,
                 down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
                 up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), attention_head_dim=4)
TINY_DEFAULT = ['down_blocks.0.attentions.0.transformer_blocks.0.attn2',
                'mid_block.attentions.0.transformer_blocks.0.attn2',
                'up_blocks.1.attentions.0.transformer_blocks.0.attn2',
                'up_blocks.1.attentions.1.transformer_blocks.0.attn2']
# stabilityai/stable-diffusion-2-1-base unet/config.json (the architecture fields).
SD21_BASE_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                      block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
                      cross_attention_dim=1024, use_linear_projection=True,
                      down_block_types=('CrossAttnDownBlock2D', ) * 3 + ('DownBlock2D', ),
                      up_block_types=('UpBlock2D', ) + ('CrossAttnUpBlock2D', ) * 3)
LAYER = 'up_blocks.1.attentions.1.transformer_blocks.0.attn2'


@pytest.fixture(scope='module')
def unet():
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    return UNet2DConditionModel(**TINY_UNET).eval()


def _inputs(batch=3, length=8, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 8, 8, generator=gen)
    t = torch.tensor([10, 500, 900][:batch])
    context = torch.randn(batch, length, 16, generator=gen)
    lengths = torch.tensor([3, 8, 5][:batch])  # real tokens per row; the rest is padding
    mask = torch.arange(length)[None] < lengths[:, None]
    return x, t, context, mask


def _layer_inputs(unet, names, run):
    """The (hidden_states, encoder_hidden_states) each named module receives during run()."""
    seen = {}
    modules = dict(unet.named_modules())

    def hook(name):
        def pre(module, args, kwargs):
            seen[name] = (args[0] if args else kwargs['hidden_states'],
                          kwargs['encoder_hidden_states'])
        return pre

    handles = [modules[n].register_forward_pre_hook(hook(n), with_kwargs=True) for n in names]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return seen


def _hand_logits(attn, hidden, context):
    """scale * q k^T per head in float64, from the module's weights (to_q/to_k have no bias)."""
    q = hidden.double() @ attn.to_q.weight.double().T
    k = context.double() @ attn.to_k.weight.double().T
    heads = attn.heads
    b, n, inner = q.shape
    q = q.view(b, n, heads, inner // heads).permute(0, 2, 1, 3)
    k = k.view(b, -1, heads, inner // heads).permute(0, 2, 1, 3)
    return q @ k.transpose(-1, -2) / math.sqrt(inner // heads)


def test_default_layers_tiny_and_sd21_base_shape(unet):
    from diffusers import UNet2DConditionModel
    assert default_layers(unet) == TINY_DEFAULT
    assert resolve_layers(unet) == TINY_DEFAULT
    with torch.device('meta'):  # the real architecture, no weights in memory
        sd21 = UNet2DConditionModel(**SD21_BASE_UNET)
    assert default_layers(sd21) == [
        'down_blocks.2.attentions.0.transformer_blocks.0.attn2',
        'down_blocks.2.attentions.1.transformer_blocks.0.attn2',
        'mid_block.attentions.0.transformer_blocks.0.attn2',
        'up_blocks.3.attentions.0.transformer_blocks.0.attn2',
        'up_blocks.3.attentions.1.transformer_blocks.0.attn2',
        'up_blocks.3.attentions.2.transformer_blocks.0.attn2']
    assert len(cross_attention_layers(sd21)) == 16  # 2 x 3 down + 1 mid + 3 x 3 up


def test_output_is_exactly_the_stock_output_and_remove_restores(unet):
    x, t, context, mask = _inputs()
    originals = {n: m.processor for n, m in unet.named_modules() if hasattr(m, 'processor')}
    with torch.no_grad():
        stock = unet(x, t, encoder_hidden_states=context).sample
        capture = CrossAttentionCapture(unet)
        with capture:
            capture.set_token_mask(context, mask)
            captured = unet(x, t, encoder_hidden_states=context).sample
            assert capture.row_scores().shape == (3, )
        after = unet(x, t, encoder_hidden_states=context).sample
    torch.testing.assert_close(captured, stock, rtol=0, atol=1e-6)
    assert torch.equal(captured, stock)
    assert torch.equal(after, stock)
    assert {n: m.processor for n, m in unet.named_modules() if hasattr(m, 'processor')} == originals
    assert capture.scores == {} and not capture.installed


@pytest.mark.parametrize('mask_padding', [True, False])
def test_scores_and_maps_match_a_hand_computation(unet, mask_padding):
    x, t, context, mask = _inputs()
    capture = CrossAttentionCapture(unet, mask_padding=mask_padding)
    capture.record_maps = True
    with capture, torch.no_grad():
        capture.set_token_mask(context, mask)
        seen = _layer_inputs(unet, TINY_DEFAULT, lambda: unet(x, t, encoder_hidden_states=context))
        rows, scores, maps = capture.row_scores(), dict(capture.scores), capture.row_maps()
    modules = dict(unet.named_modules())
    per_layer = []
    for name in TINY_DEFAULT:
        logits = _hand_logits(modules[name], *seen[name])  # (B, heads, pixels, tokens)
        exp = logits.exp()
        kept = mask[:, None, None, :].double() if mask_padding else torch.ones_like(exp)
        lse = (exp * kept).sum(-1).log().mean(dim=(1, 2))
        torch.testing.assert_close(scores[name].double(), lse, rtol=0, atol=1e-5)
        per_layer.append(lse)
        # heat map: softmax over all tokens, mass on the word tokens (no start / end / padding)
        words = torch.zeros_like(mask)
        for b, n in enumerate(mask.sum(1).tolist()):
            words[b, 1:n - 1] = True
        mass = (exp / exp.sum(-1, keepdim=True) * words[:, None, None, :].double()).sum(-1)
        torch.testing.assert_close(maps[name].double(), mass.mean(1), rtol=0, atol=1e-6)
    torch.testing.assert_close(rows.double(), torch.stack(per_layer).mean(0), rtol=0, atol=1e-5)
    # the middle row has no padding (8 of 8 tokens): both settings agree there only
    if not mask_padding:
        with CrossAttentionCapture(unet, mask_padding=True) as masked, torch.no_grad():
            masked.set_token_mask(context, mask)
            unet(x, t, encoder_hidden_states=context)
            other = masked.row_scores()
        assert torch.allclose(other[1], rows[1], atol=1e-6)
        assert (rows[[0, 2]] - other[[0, 2]]).abs().min() > 1e-3


def test_word_token_mask():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    assert word_token_mask(mask).int().tolist() == [[0, 1, 0, 0, 0], [0, 1, 1, 1, 0],
                                                    [0, 0, 0, 0, 0]]


def test_only_registered_calls_are_recorded(unet):
    x, t, context, mask = _inputs()
    with CrossAttentionCapture(unet) as capture, torch.no_grad():
        capture.set_token_mask(context, None)  # every token counts
        unet(x, t, encoder_hidden_states=context)
        unmasked = capture.row_scores()
        capture.clear()
        unet(x, t, encoder_hidden_states=context.clone())  # not registered: not recorded
        assert capture.scores == {}
        with pytest.raises(TeacherConfigError, match='No attention was recorded for the layers'):
            capture.row_scores()
    with CrossAttentionCapture(unet, mask_padding=False) as capture, torch.no_grad():
        capture.set_token_mask(context, mask)
        unet(x, t, encoder_hidden_states=context)
        assert torch.equal(capture.row_scores(), unmasked)
    with pytest.raises(ValueError, match=r'token mask of shape \(3, 7\) does not match'):
        CrossAttentionCapture(unet).set_token_mask(context, mask[:, :7])


def test_layer_errors(unet):
    with pytest.raises(TeacherConfigError) as err:
        resolve_layers(unet, ['up_blocks.1.attentions.1.transformer_blocks.0.atn2'])
    assert str(err.value).startswith(
        "Unknown layer 'up_blocks.1.attentions.1.transformer_blocks.0.atn2': the UNet "
        "(UNet2DConditionModel) has no module of that path. Nearest cross-attention modules: "
        "['up_blocks.1.attentions.1.transformer_blocks.0.attn2'")
    with pytest.raises(TeacherConfigError) as err:
        resolve_layers(unet, ['mid_block.attentions.0.transformer_blocks.0.attn1'])
    assert str(err.value) == (
        "Layer 'mid_block.attentions.0.transformer_blocks.0.attn1' is self-attention, not "
        "cross-attention: its keys come from the image, not from the text, so it cannot score a "
        "caption. Use a cross-attention module instead, e.g. "
        "'mid_block.attentions.0.transformer_blocks.0.attn2'.")
    with pytest.raises(TeacherConfigError, match="'down_blocks.0.resnets.0' is a ResnetBlock2D, "
                       'not a diffusers Attention module'):
        resolve_layers(unet, ['down_blocks.0.resnets.0'])
    with pytest.raises(TeacherConfigError, match="must be 'dsd_default' or a non-empty list"):
        resolve_layers(unet, [])
    assert resolve_layers(unet, LAYER) == [LAYER]


def test_default_layers_need_cross_attention():
    from tests.helpers.tiny_models import tiny_unet2d
    pixel_unet = tiny_unet2d()  # self-attention blocks only
    with pytest.raises(TeacherConfigError, match='has no cross-attention layer'):
        default_layers(pixel_unet)


@pytest.mark.parametrize('first_out', [True, False])
def test_captures_can_share_a_unet_and_leave_in_any_order(unet, first_out):
    x, t, context, mask = _inputs()
    original = dict(unet.named_modules())[LAYER].processor
    first = CrossAttentionCapture(unet, layers=[LAYER]).install()
    second = CrossAttentionCapture(unet, layers=TINY_DEFAULT, mask_padding=False).install()
    second.install()  # idempotent
    with torch.no_grad():
        stock_free = unet(x, t, encoder_hidden_states=context).sample  # nobody registered
        assert first.scores == {} and second.scores == {}
        first.set_token_mask(context, mask)
        second.set_token_mask(context, mask)
        out = unet(x, t, encoder_hidden_states=context).sample
        assert torch.equal(out, stock_free)
        assert set(first.scores) == {LAYER} and set(second.scores) == set(TINY_DEFAULT)
        assert not torch.allclose(first.scores[LAYER], second.scores[LAYER])  # own mask rule
    (first if first_out else second).remove()
    (second if first_out else first).remove()
    assert dict(unet.named_modules())[LAYER].processor is original
    assert all(not hasattr(m.processor, 'capture') for n, m in unet.named_modules()
               if n in TINY_DEFAULT)
