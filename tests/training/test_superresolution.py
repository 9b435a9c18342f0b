"""Tests for training.superresolution: EG3D layouts, resizing rules, gradients and the in-place image_raw quirk;
the any-resolution 2X module (not in EG3D) against 2X, its gradients and a pickle round trip."""

import pickle

import pytest
import torch
import torch.nn.functional as F

from torch_utils import misc
from training import superresolution as sr
from training.networks_stylegan2 import SynthesisBlock

#----------------------------------------------------------------------------

def _make(cls, res, fp16_res=0, **kwargs):
    torch.manual_seed(0)
    return cls(channels=32, img_resolution=res, sr_num_fp16_res=fp16_res, channel_base=1024, channel_max=32,
        fused_modconv_default='inference_only', **kwargs)

def _inputs(r, n=1, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 32, r, r, generator=gen), torch.randn(n, 14, 512, generator=gen)

#----------------------------------------------------------------------------

@pytest.mark.parametrize('cls,res,c0,c1,res0,has_filter', [
    (sr.SuperresolutionHybrid8XDC, 512, 256, 128, 256, False),
    (sr.SuperresolutionHybrid8X, 512, 128, 64, 256, True),
    (sr.SuperresolutionHybrid4X, 256, 128, 64, 128, True),
    (sr.SuperresolutionHybrid2X, 128, 128, 64, 64, True),
])
def test_layouts_match_eg3d(cls, res, c0, c1, res0, has_filter):
    m = _make(cls, res, sr_antialias=True)
    sd = m.state_dict()
    assert sd['block0.conv1.weight'].shape == (c0, c0, 3, 3) and sd['block1.conv1.weight'].shape == (c1, c1, 3, 3)
    assert sd['block0.torgb.weight'].shape == (3, c0, 1, 1) and sd['block1.conv0.affine.weight'].shape == (c0, 512)
    assert m.block0.resolution == res0 and m.block1.resolution == res and m.block1.is_last
    assert ('resample_filter' in sd) == has_filter
    no_up = isinstance(m.block0, sr.SynthesisBlockNoUp)
    assert no_up == (res0 == m.input_resolution) and m.block0.conv0.up == (1 if no_up else 2)
    with pytest.raises(AssertionError):
        _make(cls, res * 2, sr_antialias=True)

def test_fp16_flags_and_cpu_fp32():
    m = _make(sr.SuperresolutionHybrid2X, 128, fp16_res=4, sr_antialias=True)
    assert m.block0.use_fp16 and m.block1.conv1.conv_clamp == 256
    assert not _make(sr.SuperresolutionHybrid2X, 128, sr_antialias=True).block1.use_fp16
    x, ws = _inputs(32)
    with torch.no_grad():
        assert m(x[:, :3].clone(), x, ws, noise_mode='const').dtype == torch.float32 # fp16 blocks run fp32 on CPU

def test_2x_shapes_and_gradients():
    m = _make(sr.SuperresolutionHybrid2X, 128, sr_antialias=True)
    x, ws = _inputs(32, n=2)
    x.requires_grad_(True)
    ws.requires_grad_(True)
    out = m(x[:, :3], x, ws, noise_mode='random')
    assert out.shape == (2, 3, 128, 128)
    out.square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert x.grad.abs().sum() > 0
    assert ws.grad[:, :-1].abs().sum() == 0 and ws.grad[:, -1].abs().sum() > 0 # only the last w is used

def test_2x_inplace_residual_on_image_raw_view():
    """At the SR input resolution, block0 adds its ToRGB output in place to the rgb it gets (spec g.1)."""
    m = _make(sr.SuperresolutionHybrid2X, 128, sr_antialias=True)
    x, ws = _inputs(64)
    rgb_view = x[:, :3]
    before = rgb_view.clone()
    captured = {}
    m.block0.torgb.register_forward_hook(lambda mod, i, o: captured.__setitem__('res', o.clone()))
    with torch.no_grad():
        m(rgb_view, x, ws, noise_mode='const')
    torch.testing.assert_close(rgb_view, before + captured['res'])
    torch.testing.assert_close(x[:, :3], rgb_view) # the parent feature tensor changed too
    # With a resize first (r != 64) the caller's tensor is untouched.
    x, ws = _inputs(32)
    before = x.clone()
    with torch.no_grad():
        m(x[:, :3], x, ws, noise_mode='const')
    assert torch.equal(x, before)
    # EG3D's fp32 backward through the aliased path fails the same way.
    x, ws = _inputs(64)
    x.requires_grad_(True)
    feats = x * 1
    with pytest.raises(RuntimeError, match='inplace'):
        m(feats[:, :3], feats, ws, noise_mode='const').sum().backward()

def test_4x_resizes_only_smaller_inputs():
    m = _make(sr.SuperresolutionHybrid4X, 256, sr_antialias=False)
    x, ws = _inputs(64)
    with torch.no_grad():
        out = m(x[:, :3], x, ws, noise_mode='const')
        assert out.shape == (1, 3, 256, 256)
        up = F.interpolate(x, size=(128, 128), mode='bilinear', align_corners=False, antialias=False)
        torch.testing.assert_close(m(up[:, :3], up, ws, noise_mode='const'), out)

def test_deepfp32_accepts_sr_antialias_and_never_antialiases():
    deep = _make(sr.SuperresolutionHybridDeepfp32, 128, sr_antialias=True)
    two = _make(sr.SuperresolutionHybrid2X, 128, sr_antialias=False)
    misc.copy_params_and_buffers(deep, two, require_all=True)
    x, ws = _inputs(32)
    with torch.no_grad():
        torch.testing.assert_close(deep(x[:, :3], x, ws, noise_mode='const'),
            two(x[:, :3], x, ws, noise_mode='const'))

def test_8xdc_forward_wiring_with_small_blocks():
    """8XDC's forward (resize to 128, last w x3, two blocks) checked with thin blocks to stay fast on CPU."""
    m = _make(sr.SuperresolutionHybrid8XDC, 512, sr_antialias=True)
    torch.manual_seed(2)
    m.block0 = SynthesisBlock(32, 4, w_dim=512, resolution=256, img_channels=3, is_last=False, conv_clamp=None)
    m.block1 = SynthesisBlock(4, 4, w_dim=512, resolution=512, img_channels=3, is_last=True, conv_clamp=None)
    x, ws = _inputs(64)
    with torch.no_grad():
        out = m(x[:, :3], x, ws, noise_mode='const')
        xr = F.interpolate(x, size=(128, 128), mode='bilinear', align_corners=False, antialias=True)
        w3 = ws[:, -1:].repeat(1, 3, 1)
        h, img = m.block0(xr, xr[:, :3], w3, noise_mode='const')
        _, ref = m.block1(h, img, w3, noise_mode='const')
    assert out.shape == (1, 3, 512, 512)
    torch.testing.assert_close(out, ref)

#

#----------------------------------------------------------------------------
# SuperresolutionHybrid2XAnyRes.

def test_anyres_matches_2x_at_128():
    """Same layout and forward as EG3D's 2X; only the caller's rgb is not updated in place."""
    two = _make(sr.SuperresolutionHybrid2X, 128, sr_antialias=True)
    anyres = _make(sr.SuperresolutionHybrid2XAnyRes, 128, sr_antialias=True)
    assert {k: v.shape for k, v in anyres.state_dict().items()} == \
        {k: v.shape for k, v in two.state_dict().items() if k != 'resample_filter'}
    misc.copy_params_and_buffers(two, anyres, require_all=True)
    for r in (64, 32): # at the input resolution, and resized to it
        x, ws = _inputs(r, n=2)
        before = x.clone()
        with torch.no_grad():
            out = anyres(x[:, :3], x, ws, noise_mode='const')
            assert torch.equal(x, before) # the caller's image_raw view is left alone
            torch.testing.assert_close(out, two(x[:, :3].clone(), x.clone(), ws, noise_mode='const'))

@pytest.mark.parametrize('res', [32, 48, 16])
def test_anyres_shapes_and_fp32_gradients(res):
    m = _make(sr.SuperresolutionHybrid2XAnyRes, res, sr_antialias=True)
    assert m.input_resolution == res // 2 and m.block0.resolution == res // 2 and m.block1.resolution == res
    x, ws = _inputs(res // 2, n=2)
    x.requires_grad_(True)
    ws.requires_grad_(True)
    feats = x * 1 # rgb is a view of the features, as in TriPlaneGenerator: 2X fails here in fp32 (see above)
    out = m(feats[:, :3], feats, ws, noise_mode='random')
    assert out.shape == (2, 3, res, res) and out.dtype == torch.float32
    out.square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0
    assert ws.grad[:, :-1].abs().sum() == 0 and ws.grad[:, -1].abs().sum() > 0
    with pytest.raises(AssertionError):
        _make(sr.SuperresolutionHybrid2XAnyRes, res + 1, sr_antialias=True)

def test_anyres_pickle_round_trip():
    m = _make(sr.SuperresolutionHybrid2XAnyRes, 32, fp16_res=4, sr_antialias=False)
    m2 = pickle.loads(pickle.dumps(m))
    assert m2.init_kwargs == m.init_kwargs and m2.block0.use_fp16
    x, ws = _inputs(16)
    with torch.no_grad():
        assert torch.equal(m2(x[:, :3], x, ws, noise_mode='const'), m(x[:, :3], x, ws, noise_mode='const'))

#----------------------------------------------------------------------------
