"""correspondence.geometry: frames (original / stretched / padded), their inverses, threshold
scaling, and the grid <-> pixel maps, checked against hand-computed values."""
import numpy as np
import pytest
import torch

from correspondence.geometry import (as_float, frame_transform, grid_to_pixels, pixels_to_grid,
                                     pixels_to_normalized)


def test_original_frame_is_identity():
    t = frame_transform((500, 375))
    kps = torch.tensor([[10.0, 20.0], [499.0, 374.0]])
    assert torch.equal(t.to_frame(kps), kps)
    assert t.size == (500, 375)


def test_stretched_frame_scales_each_axis():
    t = frame_transform((500, 375), 'stretched', 840)
    assert t.scale == pytest.approx((1.68, 2.24)) and t.offset == (0.0, 0.0)
    out = t.to_frame(torch.tensor([[100.0, 100.0]], dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([[168.0, 224.0]], dtype=torch.float64))
    t2 = frame_transform((500, 375), 'stretched', (640, 480))
    assert t2.size == (640, 480) and t2.scale == pytest.approx((1.28, 1.28))


def test_padded_frame_landscape_like_preprocess_kps_pad():
    # 500 x 375 into 840: s = 840/500 = 1.68, resized 840 x 630, offset_y = (840 - 630) // 2.
    t = frame_transform((500, 375), 'padded', 840)
    assert t.scale == pytest.approx((1.68, 1.68))
    assert t.offset == (0.0, 105.0)
    out = t.to_frame(torch.tensor([[0.0, 0.0], [499.0, 374.0]], dtype=torch.float64))
    expected = torch.tensor([[0.0, 105.0], [499 * 1.68, 374 * 1.68 + 105]], dtype=torch.float64)
    torch.testing.assert_close(out, expected)


def test_padded_frame_portrait_and_odd_sizes():
    t = frame_transform((375, 500), 'padded', 840)
    assert t.offset == (105.0, 0.0)
    # 333 x 500: resized width round(840 * 333 / 500) = round(559.44) = 559, offset (840-559)//2.
    t = frame_transform((333, 500), 'padded', 840)
    assert t.offset == (140.0, 0.0)
    # Half-way case rounds half to even as np.around does: 840 * 5 / 8 = 525 exactly -> no tie;
    # 2 x 1 into 5: 5 * 1 / 2 = 2.5 -> 2, offset (5 - 2) // 2 = 1.
    t = frame_transform((2, 1), 'padded', 5)
    assert t.offset == (0.0, 1.0)
    # Square images are not padded.
    assert frame_transform((300, 300), 'padded', 840).offset == (0.0, 0.0)


@pytest.mark.parametrize('frame,size', [('original', None), ('stretched', 840),
                                        ('stretched', (512, 384)), ('padded', 960)])
def test_from_frame_inverts_to_frame(frame, size):
    t = frame_transform((333, 500), frame, size)
    kps = torch.tensor([[0.0, 0.0], [12.5, 400.25], [332.0, 499.0]], dtype=torch.float64)
    torch.testing.assert_close(t.from_frame(t.to_frame(kps)), kps)


def test_integer_and_numpy_inputs_are_not_truncated():
    t = frame_transform((500, 375), 'padded', 840)
    out = t.to_frame(torch.tensor([[1, 2]]))  # an integer tensor: scale 1.68 must survive
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, torch.tensor([[1.68, 2 * 1.68 + 105]], dtype=torch.float64))
    out32 = t.to_frame(np.array([[1.0, 2.0]], dtype=np.float32))
    assert out32.dtype == torch.float32
    assert t.to_frame([[1, 2]]).dtype == torch.float64
    assert as_float(torch.zeros(2, dtype=torch.float16)).dtype == torch.float16


def test_threshold_scaling():
    # PCK@0.1 of max(W, H) in original pixels = 0.1 * S in the padded frame.
    t = frame_transform((500, 375), 'padded', 840)
    assert t.length_to_frame(0.1 * 500) == pytest.approx(84.0)
    s = frame_transform((500, 375), 'stretched', 840)
    assert s.length_to_frame(10, 'x') == pytest.approx(16.8)
    assert s.length_to_frame(10, 'y') == pytest.approx(22.4)
    assert s.length_to_frame(10) == pytest.approx(22.4)


def test_frame_errors():
    with pytest.raises(ValueError, match='frame'):
        frame_transform((10, 10), 'cropped', 10)
    with pytest.raises(ValueError, match='needs a size'):
        frame_transform((10, 10), 'padded')
    with pytest.raises(ValueError, match='square'):
        frame_transform((10, 10), 'padded', (10, 20))
    with pytest.raises(ValueError, match='positive'):
        frame_transform((0, 10), 'stretched', 10)


def test_sd_dino_patch_centres():
    # A 60 x 60 ViT/14 grid over an 840 frame: cell idx centred at idx * 14 + 7 - 0.5.
    idx = torch.arange(60)
    coords = torch.stack([idx, idx.flip(0)], dim=-1)
    px = grid_to_pixels(coords, (60, 60), (840, 840))
    torch.testing.assert_close(px, coords.double() * 14 + 7 - 0.5)
    torch.testing.assert_close(pixels_to_grid(px, (60, 60), (840, 840)), coords.double())


def test_grid_pixel_round_trip_non_square():
    coords = torch.tensor([[0.0, 0.0], [3.25, 1.5], [7.0, 4.0]], dtype=torch.float64)
    px = grid_to_pixels(coords, (5, 8), (64, 40))  # 8 cols over 64 px, 5 rows over 40 px
    torch.testing.assert_close(px[0], torch.tensor([3.5, 3.5], dtype=torch.float64))
    torch.testing.assert_close(pixels_to_grid(px, (5, 8), (64, 40)), coords)


def test_pixels_to_normalized_edges():
    out = pixels_to_normalized(torch.tensor([[-0.5, -0.5], [99.5, 49.5], [49.5, 24.5]]),
                               (100, 50))
    torch.testing.assert_close(out, torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]))
