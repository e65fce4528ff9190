"""Connectors and ``align_spatial``: shapes, parameters, resizing, registry builds."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

from common.distill.connectors import (ConvConnector, IdentityConnector, LinearConnector,
                                       align_spatial)


def test_conv_connector_shapes_and_default_layers():
    conn = ConvConnector(4, 8)
    assert conn(torch.randn(2, 4, 5, 3)).shape == (2, 8, 5, 3)
    assert conn(torch.randn(2, 4)).shape == (2, 8)
    assert conn.conv.kernel_size == (1, 1) and conn.conv.bias is not None
    assert conn.bn is None and conn.act is None


def test_conv_connector_pooled_input_is_a_1x1_map():
    conn = ConvConnector(4, 8, norm=True, act=True).eval()
    x = torch.randn(3, 4)
    torch.testing.assert_close(conn(x), conn(x[:, :, None, None])[:, :, 0, 0])
    # the plain connector is the affine map W x + b
    plain = ConvConnector(4, 8)
    weight = plain.conv.weight[:, :, 0, 0]
    torch.testing.assert_close(plain(x), x @ weight.t() + plain.conv.bias)


def test_conv_connector_norm_has_no_conv_bias_and_act_is_relu():
    conn = ConvConnector(4, 8, norm=True)
    assert conn.conv.bias is None
    assert isinstance(conn.bn, torch.nn.BatchNorm2d) and conn.bn.num_features == 8
    conn = ConvConnector(4, 8, act=True)
    assert isinstance(conn.act, torch.nn.ReLU)
    out = conn(torch.randn(2, 4, 3, 3))
    assert (out >= 0).all() and (out > 0).any()


def test_conv_connector_rejects_other_ranks():
    with pytest.raises(ValueError, match=r'\(2, 4, 3\)'):
        ConvConnector(4, 8)(torch.randn(2, 4, 3))


def test_linear_and_identity_connectors():
    lin = LinearConnector(4, 6)
    assert lin(torch.randn(3, 4)).shape == (3, 6)
    assert lin(torch.randn(3, 5, 4)).shape == (3, 5, 6)
    with pytest.raises(ValueError, match='ConvConnector'):
        lin(torch.randn(3, 4, 2, 2))
    x = torch.randn(2, 3, 4, 4)
    assert IdentityConnector()(x) is x
    assert list(IdentityConnector().parameters()) == []


def test_connector_gradients_flow():
    conn = ConvConnector(4, 8, norm=True, act=True)
    conn(torch.randn(2, 4, 3, 3)).sum().backward()
    assert conn.conv.weight.grad is not None and conn.bn.weight.grad is not None


@pytest.mark.parametrize('size', [(2, 3), (8, 8), (5, 7)])
def test_align_spatial_matches_interpolate(size):
    student = torch.randn(2, 3, 4, 4)
    teacher = torch.randn(2, 6, *size)  # channels are not touched
    out = align_spatial(student, teacher)
    expected = F.interpolate(student, size=size, mode='bilinear', align_corners=False)
    assert out.shape == (2, 3, *size)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(align_spatial(student, size), expected)  # an (H, W) size works


def test_align_spatial_identity_and_modes():
    student = torch.randn(2, 3, 4, 4)
    assert align_spatial(student, torch.randn(2, 8, 4, 4)) is student
    # upsampling a constant map keeps it constant; nearest mode works (no align_corners)
    const = torch.full((1, 1, 2, 2), 3.0)
    torch.testing.assert_close(align_spatial(const, (5, 5)), torch.full((1, 1, 5, 5), 3.0))
    near = align_spatial(student, (8, 8), mode='nearest')
    torch.testing.assert_close(near, student.repeat_interleave(2, 2).repeat_interleave(2, 3))
    with pytest.raises(ValueError, match='align_spatial'):
        align_spatial(torch.randn(2, 3), torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match='align_spatial'):
        align_spatial(student, torch.randn(2, 3))


def test_build_from_root_registry():
    conn = MODELS.build(dict(type='ConvConnector', in_channels=4, out_channels=8))
    assert isinstance(conn, ConvConnector) and conn.conv.out_channels == 8
    conn = MODELS.build(dict(type='ConvConnector', in_channels=4, out_channels=8, norm=True))
    assert conn.conv.bias is None
    assert isinstance(MODELS.build(dict(type='LinearConnector', in_features=4, out_features=2)),
                      LinearConnector)
    assert isinstance(MODELS.build(dict(type='IdentityConnector')), IdentityConnector)


def test_child_scope_registry_finds_connectors_and_losses():
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS

    from common.distill.losses import DenseL1Loss
    conn = PRETRAIN_MODELS.build(dict(type='ConvConnector', in_channels=4, out_channels=8))
    assert isinstance(conn, ConvConnector)
    loss = PRETRAIN_MODELS.build(dict(type='DenseL1Loss', loss_weight=10.0))
    assert isinstance(loss, DenseL1Loss) and loss.loss_weight == 10.0
