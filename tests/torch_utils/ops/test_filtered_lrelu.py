"""Tests for filtered_lrelu: reference vs an independent numpy/scipy formulation, gradients, and the CUDA path's
gradient algebra (run on CPU through a PyTorch stand-in for the plugin, and on the real plugin when CUDA exists)."""

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from torch_utils.ops import filtered_lrelu as fl

#----------------------------------------------------------------------------
# Independent formulation: per channel, with scipy's true convolution (correlation when flip_filter).

def _fir2d(f):
    f = np.asarray([[1.0]] if f is None else f, dtype=np.float64)
    return np.outer(f, f) if f.ndim == 1 else f

def reference(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter):
    N, C, H, W = x.shape
    px0, px1, py0, py1 = [padding] * 4 if np.isscalar(padding) else padding
    conv = scipy.signal.correlate2d if flip_filter else scipy.signal.convolve2d
    out = []
    for n in range(N):
        chans = []
        for c in range(C):
            img = x[n, c].astype(np.float64) + (0 if b is None else b[c])
            z = np.zeros([H * up, W * up])
            z[::up, ::up] = img
            m = max(0, px0, px1, py0, py1)
            big = np.zeros([H * up + 2 * m, W * up + 2 * m])
            big[m:m + H * up, m:m + W * up] = z
            z = big[m - py0: m + H * up + py1, m - px0: m + W * up + px1]
            t = conv(z, _fir2d(fu) * up * up, mode='valid')
            t = np.where(t < 0, t * slope, t) * gain
            if clamp is not None:
                t = np.clip(t, -clamp, clamp)
            chans.append(conv(t, _fir2d(fd), mode='valid')[::down, ::down])
        out.append(np.stack(chans))
    return np.stack(out)

def _filters(kind):
    """Taps chosen so that normalised values (and x up^2) are exact in float32."""
    if kind == 'none':
        return None, None
    if kind == 'sep':
        f = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
        return f, torch.tensor([1.0, 1.0, 2.0, 4.0, 4.0, 2.0, 1.0, 1.0]) / 16
    if kind == '2d':
        fu = torch.tensor([[1.0, 2.0, 1.0], [0.5, 2.0, 1.5]]) / 8
        return fu, torch.tensor([[1.0, 1.0], [1.0, 5.0]]) / 8
    raise ValueError(kind)

def _data(seed=0, dtype=torch.float64, size=(5, 6), C=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn([2, C, *size], generator=g, dtype=dtype)
    b = torch.randn([C], generator=g, dtype=dtype)
    return x, b

CASES = [  # (filters, up, down, padding, clamp, flip_filter, bias)
    ('sep', 2, 2, 3, None, False, True),
    ('sep', 2, 1, [1, 2, 0, 3], 0.5, False, True),
    ('sep', 1, 2, [4, 3, 2, 5], None, True, False),
    ('2d', 2, 2, [2, 1, 3, 2], 1.0, True, True),
    ('2d', 3, 2, [0, 0, 1, -1], None, False, True),
    ('none', 1, 1, [0, 0, 0, 0], 0.7, False, True),
    ('none', 2, 1, [1, -1, 0, 0], None, False, False),
    ('2d', 1, 3, [2, 3, 1, 2], None, False, True),
]

#----------------------------------------------------------------------------

@pytest.mark.parametrize('case', CASES)
def test_ref_matches_independent_formulation(case):
    kind, up, down, padding, clamp, flip, use_b = case
    fu, fd = _filters(kind)
    x, b = _data()
    b = b if use_b else None
    y = fl.filtered_lrelu(x, fu, fd, b, up=up, down=down, padding=padding, gain=1.7, slope=0.3, clamp=clamp,
                          flip_filter=flip, impl='ref')
    p = [padding] * 4 if np.isscalar(padding) else padding
    y_ref = reference(x.numpy(), None if fu is None else fu.numpy(), None if fd is None else fd.numpy(),
                      None if b is None else b.numpy(), up, down, p, 1.7, 0.3, clamp, flip)
    assert tuple(y.shape) == y_ref.shape
    np.testing.assert_allclose(y.numpy(), y_ref, rtol=1e-10, atol=1e-10)
    # Documented output size formula.
    fw_u = 1 if fu is None else fu.shape[-1]
    fw_d = 1 if fd is None else fd.shape[-1]
    assert y.shape[3] == (x.shape[3] * up + p[0] + p[1] - (fw_u - 1) - (fw_d - 1) + (down - 1)) // down

def test_defaults_and_dtype():
    x, _ = _data(dtype=torch.float32)
    y = fl.filtered_lrelu(x)  # impl='cuda' on a CPU tensor -> reference; default gain sqrt(2), slope 0.2.
    torch.testing.assert_close(y, F.leaky_relu(x, 0.2) * np.sqrt(2))
    assert y.dtype == torch.float32
    y16 = fl.filtered_lrelu(x.to(torch.bfloat16), padding=np.int64(0), up=np.int32(1))  # numpy ints accepted
    assert y16.dtype == torch.bfloat16

@pytest.mark.parametrize('case', [CASES[0], CASES[3], CASES[4]])
def test_ref_gradcheck(case):
    kind, up, down, padding, clamp, flip, _ = case
    fu, fd = _filters(kind)
    x, b = _data(size=(3, 3), C=2)
    x.requires_grad_(True)
    b.requires_grad_(True)
    fn = lambda x, b: fl._filtered_lrelu_ref(x, fu, fd, b, up=up, down=down, padding=padding, clamp=clamp,
                                             flip_filter=flip)
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))

def test_bad_arguments():
    x, b = _data()
    with pytest.raises(ValueError, match='impl'):
        fl.filtered_lrelu(x, impl='fast')
    with pytest.raises(ValueError, match='b must'):
        fl.filtered_lrelu(x, b=b.float())
    with pytest.raises(ValueError, match='clamp'):
        fl.filtered_lrelu(x, clamp=-1)
    with pytest.raises(ValueError, match='too small'):
        fl.filtered_lrelu(x, fu=torch.ones([9]), padding=-2)
    with pytest.raises(ValueError, match='float32'):
        fl.filtered_lrelu(x, fu=torch.ones([2], dtype=torch.float64))

#----------------------------------------------------------------------------
# The CUDA path's Python side (filter preparation, geometry, mask-based gradient chain), exercised on CPU with a
# PyTorch stand-in that implements the plugin's documented contract (filtered_lrelu.h).

class FakePlugin:
    @staticmethod
    def filtered_lrelu(x, f1, f2, b, mask, up, down, p1x0, p1x1, p1y0, p1y1, p2x0, p2x1, p2y0, p2y1, gain, slope,
                       clamp, mode):
        N, C, H, W = x.shape
        x = x + b[None, :, None, None] if b.numel() else x
        z = x.new_zeros([N, C, H * up, W * up])
        z[:, :, ::up, ::up] = x
        z = F.pad(z, [p1x0, p1x1, p1y0, p1y1])  # Negative amounts crop.
        t = F.conv2d(z.reshape(N * C, 1, *z.shape[2:]), f1[None, None].to(x.dtype))
        t = t.reshape(N, C, *t.shape[2:])
        if mode == 2:
            t = t * torch.where(mask == 0, gain, torch.where(mask == 1, gain * slope, 0.0)).to(t.dtype)
        else:
            m = (t < 0).to(torch.uint8)
            t = torch.where(t < 0, t * slope, t) * gain
            if clamp >= 0:
                m = torch.where(t.abs() > clamp, 2, m).to(torch.uint8)
                t = t.clamp(-clamp, clamp)
            if mode == 1:
                assert mask.shape == t.shape
                mask.copy_(m)
        t = F.pad(t, [p2x0, p2x1, p2y0, p2y1])
        y = F.conv2d(t.reshape(N * C, 1, *t.shape[2:]), f2[None, None].to(x.dtype))[:, :, ::down, ::down]
        return y.reshape(N, C, *y.shape[2:])

@pytest.fixture
def fake_plugin(monkeypatch):
    monkeypatch.setattr(fl._plugin, 'module', FakePlugin())

@pytest.mark.parametrize('case', CASES)
def test_cuda_path_algebra_values(fake_plugin, case):
    kind, up, down, padding, clamp, flip, use_b = case
    fu, fd = _filters(kind)
    x, b = _data(seed=2)
    b = b if use_b else None
    kw = dict(up=up, down=down, padding=padding, gain=1.3, slope=0.1, clamp=clamp, flip_filter=flip)
    torch.testing.assert_close(fl._filtered_lrelu_cuda(x, fu, fd, b, **kw), fl._filtered_lrelu_ref(x, fu, fd, b, **kw))

@pytest.mark.parametrize('case', CASES)
def test_cuda_path_algebra_gradients(fake_plugin, case):
    kind, up, down, padding, clamp, flip, _ = case
    fu, fd = _filters(kind)
    x, b = _data(seed=4, size=(6, 5), C=2)
    x.requires_grad_(True)
    b.requires_grad_(True)
    kw = dict(up=up, down=down, padding=padding, gain=1.3, slope=0.1, clamp=clamp, flip_filter=flip)
    fn = lambda x, b: fl._filtered_lrelu_cuda(x, fu, fd, b, **kw)
    assert torch.autograd.gradcheck(fn, (x, b))
    if case in (CASES[0], CASES[4]):  # Second order (the gradient chain's own gradient); two cases keep it fast.
        assert torch.autograd.gradgradcheck(fn, (x, b))
    dy = torch.randn_like(fn(x, b))
    g_cuda = torch.autograd.grad(fn(x, b), [x, b], dy)
    g_ref = torch.autograd.grad(fl._filtered_lrelu_ref(x, fu, fd, b, **kw), [x, b], dy)
    for a, r in zip(g_cuda, g_ref):
        torch.testing.assert_close(a, r)

#----------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('case', CASES)
def test_cuda_plugin_matches_ref(case):
    assert fl._plugin.ready(), 'filtered_lrelu plugin failed to build'
    kind, up, down, padding, clamp, flip, use_b = case
    fu, fd = [None if f is None else f.cuda() for f in _filters(kind)]
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-4), (torch.float16, 2e-2)):
        x, b = [t.cuda().to(dtype).requires_grad_(True) for t in _data(seed=5, size=(9, 11))]
        b = b if use_b else None
        kw = dict(up=up, down=down, padding=padding, clamp=clamp, flip_filter=flip)
        y = fl.filtered_lrelu(x, fu, fd, b, impl='cuda', **kw)
        y_ref = fl.filtered_lrelu(x, fu, fd, b, impl='ref', **kw)
        assert y.dtype == dtype
        torch.testing.assert_close(y.double(), y_ref.double(), rtol=tol, atol=tol)
        if dtype == torch.float16:
            continue  # fp16 rounding can move samples across the kink; gradients are checked in fp32/fp64.
        dy = torch.randn_like(y)
        inputs = [x] if b is None else [x, b]
        for a, r in zip(torch.autograd.grad(y, inputs, dy), torch.autograd.grad(y_ref, inputs, dy)):
            torch.testing.assert_close(a, r, rtol=tol, atol=tol * 10)

#----------------------------------------------------------------------------
