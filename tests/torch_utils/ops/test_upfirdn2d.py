"""Tests for torch_utils.ops.upfirdn2d: reference path vs an explicit numpy/scipy formulation, gradients, CUDA-path logic."""

import numpy as np
import pytest
import scipy.signal
import torch

from torch_utils.ops import upfirdn2d

#----------------------------------------------------------------------------
# Independent formulation: explicit zero-insert, pad/crop by index arithmetic, scipy 2-D convolution
# (outer product for 1-D filters), decimation.

def np_upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    upx, upy = (up, up) if isinstance(up, int) else up
    dnx, dny = (down, down) if isinstance(down, int) else down
    if isinstance(padding, int):
        padding = [padding] * 4
    elif len(padding) == 2:
        padding = [padding[0], padding[0], padding[1], padding[1]]
    px0, px1, py0, py1 = padding
    f2 = np.ones([1, 1]) if f is None else np.asarray(f, dtype=np.float64)
    if f2.ndim == 1:
        f2 = np.outer(f2, f2)
    f2 = f2 * gain
    N, C, H, W = x.shape
    z = np.zeros([N, C, H * upy, W * upx])
    z[:, :, ::upy, ::upx] = x
    Hp, Wp = H * upy + py0 + py1, W * upx + px0 + px1
    p = np.zeros([N, C, Hp, Wp])
    rows = [(r, r - py0) for r in range(Hp) if 0 <= r - py0 < H * upy] # (padded index, source index)
    cols = [(s, s - px0) for s in range(Wp) if 0 <= s - px0 < W * upx]
    if rows and cols:
        (r_dst, r_src), (c_dst, c_src) = zip(*rows), zip(*cols)
        p[:, :, np.array(r_dst)[:, None], np.array(c_dst)[None, :]] = z[:, :, np.array(r_src)[:, None], np.array(c_src)[None, :]]
    out = np.zeros([N, C, Hp - f2.shape[0] + 1, Wp - f2.shape[1] + 1])
    op = scipy.signal.correlate2d if flip_filter else scipy.signal.convolve2d
    for n in range(N):
        for c in range(C):
            out[n, c] = op(p[n, c], f2, mode='valid')
    return out[:, :, ::dny, ::dnx]

def _filters():
    rng = np.random.RandomState(1)
    return {
        'none': None,
        '2d_4x4': rng.randn(4, 4),
        '2d_3x2': rng.randn(3, 2),
        'sep_4': rng.randn(4),
        'sep_3': rng.randn(3),
        'sep_1': rng.randn(1),
    }

CASES = [
    dict(),
    dict(up=2),
    dict(down=2),
    dict(up=2, down=2, padding=1),
    dict(up=[2, 3], padding=[1, 2, 0, 3]),
    dict(down=[3, 2], padding=[2, 1]),
    dict(up=[1, 2], down=[2, 1], padding=[3, -1, -2, 2]),
    dict(padding=[-1, 2, 2, -1], flip_filter=True),
    dict(up=2, padding=2, flip_filter=True, gain=3.5),
    dict(up=3, down=2, padding=[2, 2, 1, 3], gain=0.25),
]

@pytest.mark.parametrize('fname', list(_filters()))
@pytest.mark.parametrize('case', CASES, ids=[str(i) for i in range(len(CASES))])
def test_ref_matches_numpy(fname, case):
    f = _filters()[fname]
    x = np.random.RandomState(0).randn(2, 3, 7, 6)
    ft = None if f is None else torch.tensor(f, dtype=torch.float32)
    f64 = None if f is None else np.asarray(ft, dtype=np.float64) # use the float32-rounded taps
    expect = np_upfirdn2d(x, f64, **case)
    y = upfirdn2d.upfirdn2d(torch.tensor(x), ft, impl='ref', **case)
    assert y.dtype == torch.float64
    assert tuple(y.shape) == expect.shape
    # Tolerance covers the float32 rounding of the gain-scaled filter (the op scales f before casting).
    np.testing.assert_allclose(y.numpy(), expect, rtol=1e-6, atol=1e-6)
    # float32 too, and the default impl='cuda' on a CPU tensor takes the reference path.
    y32 = upfirdn2d.upfirdn2d(torch.tensor(x, dtype=torch.float32), ft, **case)
    assert y32.dtype == torch.float32
    np.testing.assert_allclose(y32.numpy(), expect, rtol=1e-4, atol=1e-4)

def test_output_size_formula():
    x = torch.zeros([1, 1, 9, 11])
    for up, down, pad, taps in [(1, 1, 0, 1), (2, 1, 3, 4), (1, 2, 1, 4), (3, 2, -1, 3), (2, 3, 5, 6)]:
        y = upfirdn2d.upfirdn2d(x, torch.ones([taps, taps]), up=up, down=down, padding=pad)
        assert y.shape[2] == (9 * up + 2 * pad - taps) // down + 1
        assert y.shape[3] == (11 * up + 2 * pad - taps) // down + 1

#----------------------------------------------------------------------------

def test_setup_filter():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    np.testing.assert_allclose(f.numpy(), np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64, rtol=1e-7)
    assert f.dtype == torch.float32
    assert upfirdn2d.setup_filter(None).shape == (1, 1) and upfirdn2d.setup_filter(5).tolist() == [[1.0]]
    f8 = upfirdn2d.setup_filter(np.arange(1, 9))
    assert f8.shape == (8,) and abs(float(f8.sum()) - 1) < 1e-6
    assert upfirdn2d.setup_filter(np.arange(1, 9), separable=False).shape == (8, 8)
    assert upfirdn2d.setup_filter([1, 2], separable=True).shape == (2,)
    np.testing.assert_allclose(upfirdn2d.setup_filter([1, 2, 3], flip_filter=True, normalize=False).numpy(),
                               np.outer([3, 2, 1], [3, 2, 1]), rtol=1e-7)
    np.testing.assert_allclose(upfirdn2d.setup_filter([1, 1], gain=4).numpy(), np.full([2, 2], 1.0))   # 4 ** (2/2) / 4
    np.testing.assert_allclose(upfirdn2d.setup_filter(np.ones(8), gain=4).numpy(), np.full([8], 0.25))  # 4 ** (1/2) / 8
    src = torch.tensor([[1.0, 3.0], [3.0, 1.0]])
    upfirdn2d.setup_filter(src)
    assert src.tolist() == [[1.0, 3.0], [3.0, 1.0]] # caller's tensor is not normalised in place
    with pytest.raises(ValueError):
        upfirdn2d.setup_filter(np.ones([2, 2]), separable=True)

def test_parse_helpers():
    assert upfirdn2d._parse_scaling(2) == [2, 2] and upfirdn2d._parse_scaling([1, 3]) == [1, 3]
    assert upfirdn2d._parse_padding(1) == [1, 1, 1, 1]
    assert upfirdn2d._parse_padding([1, 2]) == [1, 1, 2, 2]
    assert upfirdn2d._parse_padding([1, -2, 3, 4]) == [1, -2, 3, 4]
    assert upfirdn2d._get_filter_size(None) == (1, 1)
    assert upfirdn2d._get_filter_size(torch.ones([3, 5])) == (5, 3)
    assert upfirdn2d._get_filter_size(torch.ones([4])) == (4, 4)
    for bad in [np.int64(2), 0, [1, 2, 3], 2.0]:
        with pytest.raises(ValueError):
            upfirdn2d._parse_scaling(bad)
    for bad in [np.int64(1), [1, 2, 3], 1.5]:
        with pytest.raises(ValueError):
            upfirdn2d._parse_padding(bad)
    x = torch.zeros([1, 1, 2, 2])
    with pytest.raises(ValueError):
        upfirdn2d.upfirdn2d(x, torch.ones([4, 4])) # too small for the filter
    with pytest.raises(ValueError):
        upfirdn2d.upfirdn2d(x, torch.ones([1, 1], dtype=torch.float64))
    with pytest.raises(ValueError):
        upfirdn2d.upfirdn2d(x, None, impl='fast')

#----------------------------------------------------------------------------

def test_wrappers():
    rng = np.random.RandomState(3)
    x = rng.randn(1, 2, 8, 6)
    xt = torch.tensor(x)
    for fl in [[1, 3, 3, 1], [1, 2, 1], [1, 1], np.arange(1.0, 9.0)]:
        f = upfirdn2d.setup_filter(fl)
        fw = f.shape[-1]
        ff = f.double().numpy()
        y = upfirdn2d.filter2d(xt, f)
        assert y.shape == xt.shape
        p = [fw // 2, (fw - 1) // 2, fw // 2, (fw - 1) // 2]
        np.testing.assert_allclose(y.numpy(), np_upfirdn2d(x, ff, padding=p), atol=1e-10)
        y = upfirdn2d.upsample2d(xt, f, padding=[1, 0, 0, 2])
        assert y.shape == (1, 2, 16 + 2, 12 + 1)
        p = [1 + (fw + 1) // 2, (fw - 2) // 2, (fw + 1) // 2, 2 + (fw - 2) // 2]
        np.testing.assert_allclose(y.numpy(), np_upfirdn2d(x, ff, up=2, padding=p, gain=4), atol=1e-10)
        y = upfirdn2d.downsample2d(xt, f, down=[2, 1])
        assert y.shape == (1, 2, 8, 3)
        p = [(fw - 1) // 2, (fw - 2) // 2, fw // 2, (fw - 1) // 2]
        np.testing.assert_allclose(y.numpy(), np_upfirdn2d(x, ff, down=[2, 1], padding=p), atol=1e-10)
    # Semantic anchors: box filters give nearest upsampling and 2x2 average pooling; None is identity.
    box = upfirdn2d.setup_filter([1, 1])
    np.testing.assert_allclose(upfirdn2d.upsample2d(xt, box).numpy(),
                               xt.repeat_interleave(2, 2).repeat_interleave(2, 3).numpy(), atol=1e-12)
    np.testing.assert_allclose(upfirdn2d.downsample2d(xt, box).numpy(),
                               torch.nn.functional.avg_pool2d(xt, 2).numpy(), atol=1e-12)
    assert torch.equal(upfirdn2d.filter2d(xt, None), xt)

#----------------------------------------------------------------------------

GRAD_CASES = [
    (dict(up=2, padding=[2, 1, 1, 2]), [4, 4]),
    (dict(down=2, padding=1, flip_filter=True, gain=2.0), [3]),
    (dict(up=[1, 2], down=[2, 1], padding=[1, 0, -1, 2]), [3, 2]),
]

@pytest.mark.parametrize('case,fshape', GRAD_CASES)
def test_ref_gradcheck(case, fshape):
    f = torch.randn(fshape, generator=torch.Generator().manual_seed(0))
    x = torch.randn([1, 1, 4, 5], dtype=torch.float64, requires_grad=True)
    fn = lambda x: upfirdn2d.upfirdn2d(x, f, impl='ref', **case)
    assert torch.autograd.gradcheck(fn, [x])
    assert torch.autograd.gradgradcheck(fn, [x])

#----------------------------------------------------------------------------
# The CUDA path's Python logic (separable split, 1-tap shortcut, gradient = transposed op with derived
# padding, higher orders) checked on CPU by standing in for the kernel with its documented contract.

class _KernelStandIn:
    @staticmethod
    def upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip, gain):
        assert f.ndim == 2 and f.dtype == torch.float32
        return upfirdn2d._upfirdn2d_ref(x, f, up=[upx, upy], down=[downx, downy],
                                        padding=[px0, px1, py0, py1], flip_filter=flip, gain=gain)

@pytest.mark.parametrize('case,fshape', GRAD_CASES + [(dict(up=3, down=2, padding=[2, 0, 1, 3]), [1]),
                                                      (dict(up=2, down=[1, 3], padding=-1), [4])])
def test_cuda_function_logic(monkeypatch, case, fshape):
    monkeypatch.setattr(upfirdn2d._plugin, 'module', _KernelStandIn())
    f = torch.rand(fshape, generator=torch.Generator().manual_seed(1)) + 0.5
    x = torch.randn([1, 2, 5, 4], dtype=torch.float64, requires_grad=True)
    fn_cuda = lambda x: upfirdn2d._upfirdn2d_cuda(**case).apply(x, f)
    fn_ref = lambda x: upfirdn2d._upfirdn2d_ref(x, f, **case)
    torch.testing.assert_close(fn_cuda(x), fn_ref(x), rtol=1e-6, atol=1e-6) # float32 filter scaling differs by pass
    dy = torch.randn_like(fn_ref(x))
    g_c, = torch.autograd.grad(fn_cuda(x), x, dy)
    g_r, = torch.autograd.grad(fn_ref(x), x, dy)
    torch.testing.assert_close(g_c, g_r, rtol=1e-6, atol=1e-6) # float32 filter scaling differs by pass
    assert torch.autograd.gradcheck(fn_cuda, [x])
    assert torch.autograd.gradgradcheck(fn_cuda, [x])

#----------------------------------------------------------------------------
