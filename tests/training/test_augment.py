"""Tests for training.augment: computed wavelets, exact pixel blitting, colour maths, RGB-D / dual layouts, pickling."""

import pickle

import numpy as np
import pytest
import torch

from training.augment import AugmentPipe, band_filters, symlet

#----------------------------------------------------------------------------

def smooth_images(n=2, c=3, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn([n, c, h // 4, w // 4], generator=g)
    return torch.nn.functional.interpolate(x, size=(h, w), mode='bicubic', align_corners=False)

def test_symlets_match_published_coefficients():
    # Daubechies' tables (as in PyWavelets): sym2 = db2 (time-reversed here), sym6 exactly.
    sym2 = [-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025]
    h2 = symlet(2)
    assert np.allclose(h2, sym2, atol=1e-12) or np.allclose(h2[::-1], sym2, atol=1e-12)
    sym6 = [0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
            0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
            -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148]
    np.testing.assert_allclose(symlet(6), sym6, atol=1e-10)
    h = symlet(6)  # orthonormal to its even shifts
    np.testing.assert_allclose([np.dot(h[:12 - 2 * m], h[2 * m:]) for m in range(6)], [1, 0, 0, 0, 0, 0], atol=1e-12)

def test_band_filters_partition_unity():
    b = band_filters(4).astype(np.float64)
    delta = np.zeros(b.shape[1]); delta[b.shape[1] // 2] = 1
    np.testing.assert_allclose(b.sum(0), delta, atol=1e-7)
    np.testing.assert_allclose(b, b[:, ::-1], atol=1e-7)  # zero phase
    dc = b.sum(1)
    np.testing.assert_allclose(dc, [1, 0, 0, 0], atol=1e-6)
    nyq = (b * (-1.0) ** np.arange(b.shape[1])).sum(1) * (-1) ** (b.shape[1] // 2)
    np.testing.assert_allclose(nyq, [0, 0, 0, 1], atol=1e-6)

#----------------------------------------------------------------------------

def test_disabled_pipe_is_identity():
    x = smooth_images()
    torch.testing.assert_close(AugmentPipe()(x), x)
    pipe = AugmentPipe(xflip=1, brightness=1)
    pipe.p.zero_()
    torch.testing.assert_close(pipe(x), x)

def test_integer_translation_is_exact():
    x = torch.rand([2, 3, 16, 16])
    pipe = AugmentPipe(xint=1, xint_max=0.25)
    y = pipe(x, debug_percentile=0.75)  # t = 0.5 * 0.25 * 16 = 2 px right and down
    ref = torch.nn.functional.pad(x, [2, 0, 2, 0], mode='reflect')[:, :, :16, :16]
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)

def test_xflip_and_rotate90_match_torch():
    # Not bit-exact: the symlet's slightly non-linear phase leaves a small residual (without the group-delay
    # compensation in _warp the error is ~0.6, i.e. a 0.3 px shift).
    x = smooth_images(h=32, w=32)
    y = AugmentPipe(xflip=1)(x, debug_percentile=0.75)
    assert (y - x.flip(3)).abs().max() < 0.06 * x.abs().max()
    y = AugmentPipe(rotate90=1)(x, debug_percentile=0.3)  # i = 1: rotate by 90 degrees
    assert min((y - torch.rot90(x, k, dims=(2, 3))).abs().max().item() for k in (1, 3)) < 0.06 * x.abs().max()

def test_brightness_contrast_saturation_math():
    x = torch.rand([2, 3, 8, 8])
    dp = 0.8
    z = float(torch.erfinv(torch.tensor(2 * dp - 1)) * np.sqrt(2))
    y = AugmentPipe(brightness=1, brightness_std=0.2)(x, debug_percentile=dp)
    torch.testing.assert_close(y, x + 0.2 * z)
    y = AugmentPipe(contrast=1, contrast_std=0.5)(x, debug_percentile=dp)
    torch.testing.assert_close(y, x * 2 ** (0.5 * z))
    y = AugmentPipe(saturation=1, saturation_std=1)(x, debug_percentile=dp)
    mean = x.mean(dim=1, keepdim=True)
    torch.testing.assert_close(y, mean + (x - mean) * 2 ** z, atol=1e-5, rtol=1e-5)
    y = AugmentPipe(lumaflip=1)(x, debug_percentile=dp)  # reflect through the grey plane
    torch.testing.assert_close(y, x - 2 * mean, atol=1e-5, rtol=1e-5)

def test_hue_rotation_preserves_grey_and_norm():
    x = torch.rand([2, 3, 8, 8])
    y = AugmentPipe(hue=1)(x, debug_percentile=0.9)
    torch.testing.assert_close(y.mean(1), x.mean(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y.norm(dim=1), x.norm(dim=1), atol=1e-5, rtol=1e-5)
    grey = x.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    torch.testing.assert_close(AugmentPipe(hue=1)(grey, debug_percentile=0.9), grey, atol=1e-5, rtol=1e-5)

def test_rgbd_geometry_on_all_channels_colour_on_rgb_only():
    x = torch.rand([2, 4, 16, 16])
    y = AugmentPipe(brightness=1, contrast=1, hue=1, saturation=1, lumaflip=1, noise=1, imgfilter=1)(x, debug_percentile=0.8)
    torch.testing.assert_close(y[:, 3], x[:, 3], atol=0, rtol=0)
    assert (y[:, :3] - x[:, :3]).abs().max() > 0.1
    y = AugmentPipe(xint=1, xint_max=0.25)(x, debug_percentile=0.75)
    ref = torch.nn.functional.pad(x, [2, 0, 2, 0], mode='reflect')[:, :, :16, :16]
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)

def test_dual_layout_gets_same_colour_transform():
    x = torch.rand([2, 3, 8, 8])
    pipe = AugmentPipe(brightness=1, contrast=1, hue=1, saturation=1)
    y = pipe(torch.cat([x, x], dim=1), debug_percentile=0.7)
    torch.testing.assert_close(y[:, :3], y[:, 3:])
    torch.testing.assert_close(y[:, :3], pipe(x, debug_percentile=0.7))
    with pytest.raises(ValueError, match='channel count'):
        pipe(torch.rand([1, 2, 8, 8]))

def test_cutout_and_noise():
    x = torch.ones([1, 3, 16, 16])
    y = AugmentPipe(cutout=1, cutout_size=0.5)(x, debug_percentile=0.5)
    assert y[0, :, 4:12, 4:12].abs().max() == 0 and y[0, :, :4].min() == 1 and y.sum() == 3 * (256 - 64)
    torch.manual_seed(0)
    y = AugmentPipe(noise=1, noise_std=0.1)(torch.zeros([64, 3, 16, 16]))
    assert 0.01 < y.std().item() < 0.2

def test_full_pipeline_random_grad_and_pickle():
    torch.manual_seed(1)
    kw = dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1, lumaflip=1,
              hue=1, saturation=1, imgfilter=1, noise=1, cutout=1)
    pipe = AugmentPipe(**kw)
    x = smooth_images(n=4, c=6, h=16, w=16).requires_grad_(True)
    y = pipe(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    pipe.p.fill_(0.3)
    pipe2 = pickle.loads(pickle.dumps(pipe))
    assert float(pipe2.p) == pytest.approx(0.3) and pipe2.hue == 1 and pipe2.init_kwargs == kw
    x = smooth_images()
    torch.manual_seed(2); y2 = pipe2(x)
    torch.manual_seed(2); y1 = pipe(x)
    torch.testing.assert_close(y2, y1)

#----------------------------------------------------------------------------
