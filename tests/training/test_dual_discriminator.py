"""Tests for training.dual_discriminator: dual-image D vs. the StyleGAN2 D, resizing modes, pose noise, variants."""

import pytest
import torch
import torch.nn.functional as F

from torch_utils import misc
from torch_utils.ops import upfirdn2d
from training import dual_discriminator as dd
from training.networks_stylegan2 import Discriminator

#----------------------------------------------------------------------------

_KW = dict(c_dim=25, img_resolution=32, img_channels=3, channel_base=1024, channel_max=32,
    epilogue_kwargs=dict(mbstd_group_size=2))

def _imgs(n=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return dict(image=torch.randn(n, 3, 32, 32, generator=gen), image_raw=torch.randn(n, 3, 16, 16, generator=gen))

#----------------------------------------------------------------------------

def test_dual_discriminator_equals_stylegan2_d_on_concatenated_input():
    torch.manual_seed(0)
    D = dd.DualDiscriminator(**_KW)
    assert D.img_channels == 6 and D.block_resolutions == [32, 16, 8] and D.disc_c_noise == 0
    assert 'resample_filter' in dict(D.named_buffers()) and len(D.mapping.fc7.weight) == 32
    ref = Discriminator(**dict(_KW, img_channels=6))
    misc.copy_params_and_buffers(D, ref, require_all=True)
    imgs, c = _imgs(), torch.randn(2, 25)
    raw_up = F.interpolate(imgs['image_raw'], size=(32, 32), mode='bilinear', align_corners=False, antialias=True)
    with torch.no_grad():
        torch.testing.assert_close(D(imgs, c), ref(torch.cat([imgs['image'], raw_up], 1), c))

def test_dual_discriminator_gradients():
    torch.manual_seed(0)
    D = dd.DualDiscriminator(**_KW)
    imgs = {k: v.requires_grad_(True) for k, v in _imgs().items()}
    logits = D(imgs, torch.randn(2, 25))
    assert logits.shape == (2, 1)
    logits.sum().backward()
    assert imgs['image'].grad.abs().sum() > 0 and imgs['image_raw'].grad.abs().sum() > 0
    for name, p in D.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name

def test_pose_noise_is_added_in_place():
    torch.manual_seed(0)
    D = dd.DualDiscriminator(**_KW, disc_c_noise=1.0)
    c = torch.randn(4, 25)
    c0 = c.clone()
    with torch.no_grad():
        D(_imgs(4), c)
    assert not torch.equal(c, c0) # EG3D modifies the caller's tensor
    assert ((c - c0).abs() > 0).float().mean() > 0.9

#----------------------------------------------------------------------------

def test_filtered_resizing_modes():
    x = torch.randn(2, 3, 16, 16)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    aa = F.interpolate(x, size=(32, 32), mode='bilinear', align_corners=False, antialias=True)
    plain = F.interpolate(x, size=(32, 32), mode='bilinear', align_corners=False)
    torch.testing.assert_close(dd.filtered_resizing(x, 32, f), aa)
    torch.testing.assert_close(dd.filtered_resizing(x, 32, f, filter_mode='none'), plain)
    torch.testing.assert_close(dd.filtered_resizing(x, 32, f, filter_mode=0.25), 0.75 * plain + 0.25 * aa)
    classic = dd.filtered_resizing(x, 32, f, filter_mode='classic')
    assert classic.shape == (2, 3, 32, 32)
    const = dd.filtered_resizing(torch.ones(1, 1, 16, 16), 8, f, filter_mode='classic')
    torch.testing.assert_close(const[..., 2:-2, 2:-2], torch.ones(1, 1, 4, 4)) # unit DC gain away from borders
    for bad in ['bogus', 1.5]:
        with pytest.raises(ValueError):
            dd.filtered_resizing(x, 32, f, filter_mode=bad)

#----------------------------------------------------------------------------

def test_single_and_dummy_dual_discriminators():
    torch.manual_seed(0)
    single = dd.SingleDiscriminator(**_KW)
    assert single.img_channels == 3
    imgs, c = _imgs(), torch.randn(2, 25)
    with torch.no_grad():
        a = single(imgs, c)
        b = single(dict(imgs, image_raw=imgs['image_raw'] * 0), c)
    torch.testing.assert_close(a, b) # image_raw ignored
    dummy = dd.DummyDualDiscriminator(**_KW)
    assert dummy.img_channels == 6 and dummy.raw_fade == 1
    with torch.no_grad():
        out = dummy(imgs, c)
    assert out.shape == (2, 1) and dummy.raw_fade == pytest.approx(1 - 32 / 500000)

#----------------------------------------------------------------------------
