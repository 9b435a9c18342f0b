"""Tests for conv2d_resample against an independent numpy/scipy formulation of the same signal chain."""

import itertools

import numpy as np
import pytest
import scipy.signal
import torch

from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import conv2d_resample

#----------------------------------------------------------------------------
# Independent reference, written from the definition (not from the fast-path algorithm):
#   zero-stuff by `up` -> pad/crop (user padding + filter-centering padding) -> FIR `f` with gain up^2 (only if up>1)
#   -> 'valid' conv with w (groups) -> FIR `f` again and keep every `down`-th sample (only if down>1).
# Convolutions use scipy.signal (convolve2d = true convolution, correlate2d = cross-correlation).

def _fir2d(f):
    f = np.asarray([[1.0]] if f is None else f, dtype=np.float64)
    return np.outer(f, f) if f.ndim == 1 else f

def _apply_fir(img, f, flip_filter, gain=1.0):
    op = scipy.signal.correlate2d if flip_filter else scipy.signal.convolve2d
    return op(img, _fir2d(f) * gain, mode='valid')

def reference(x, w, f, up, down, padding, groups, flip_weight, flip_filter):
    x = x.astype(np.float64)
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    fh, fw = (1, 1) if f is None else _fir2d(f).shape
    if np.isscalar(padding):
        px0 = px1 = py0 = py1 = padding
    elif len(padding) == 2:
        px0, px1, py0, py1 = padding[0], padding[0], padding[1], padding[1]
    else:
        px0, px1, py0, py1 = padding
    if up > 1:
        px0 += (fw + up - 1) // 2; px1 += (fw - up) // 2; py0 += (fh + up - 1) // 2; py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2; px1 += (fw - down) // 2; py0 += (fh - down + 1) // 2; py1 += (fh - down) // 2
    # Zero-stuffing with explicit index assignment.
    z = np.zeros([N, C, H * up, W * up])
    z[:, :, ::up, ::up] = x
    # Pad with a big margin, then slice out the window [-p0, size + p1).
    m = max(0, px0, px1, py0, py1)
    big = np.zeros([N, C, H * up + 2 * m, W * up + 2 * m])
    big[:, :, m:m + H * up, m:m + W * up] = z
    z = big[:, :, m - py0: m + H * up + py1, m - px0: m + W * up + px1]
    out = []
    for n in range(N):
        chans = [_apply_fir(z[n, c], f, flip_filter, up * up) if up > 1 else z[n, c] for c in range(C)]
        res = []
        cin_g, cout_g = C // groups, O // groups
        for o in range(O):
            g = o // cout_g
            acc = 0
            for i in range(cin_g):
                op = scipy.signal.correlate2d if flip_weight else scipy.signal.convolve2d
                acc = acc + op(chans[g * cin_g + i], w[o, i], mode='valid')
            if down > 1:
                acc = _apply_fir(acc, f, flip_filter)[::down, ::down]
            res.append(acc)
        out.append(np.stack(res))
    return np.stack(out)

#----------------------------------------------------------------------------

FILTERS = {'none': None, 'box2': [1.0, 1.0], 'binom4': [1.0, 3.0, 3.0, 1.0], 'sep8': [1, 1, 2, 4, 4, 2, 1, 1],
           '2d3x2': [[1.0, 2.0], [3.0, 1.0], [0.5, 0.5]]}  # sums are powers of 2: exact in float32

def _filter(name, separable=False):
    f = FILTERS[name]
    if f is None:
        return None, None
    t = torch.tensor(f, dtype=torch.float32)
    if t.ndim == 1 and not separable:
        t = torch.outer(t, t)
    t = t / t.sum()
    return t, t.numpy()

def _run_case(kernel, up, down, padding, groups, flip_weight, flip_filter, fname, separable=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    cin, cout = 2 * groups, 2 * groups
    x = torch.randn([2, cin, 7, 6], generator=g, dtype=torch.float64)
    w = torch.randn([cout, cin // groups, kernel[0], kernel[1]], generator=g, dtype=torch.float64)
    f, fn = _filter(fname, separable)
    y = conv2d_resample.conv2d_resample(x, w, f=f, up=up, down=down, padding=padding, groups=groups,
                                        flip_weight=flip_weight, flip_filter=flip_filter)
    y_ref = reference(x.numpy(), w.numpy(), fn, up, down, padding, groups, flip_weight, flip_filter)
    assert tuple(y.shape) == y_ref.shape, (tuple(y.shape), y_ref.shape)
    np.testing.assert_allclose(y.numpy(), y_ref, rtol=1e-10, atol=1e-10)

# Every branch of the algorithm: 1x1+down, 1x1+up, down only, up (+down), plain conv, asymmetric/negative padding.
@pytest.mark.parametrize('kernel,up,down', [((1, 1), 1, 2), ((1, 1), 2, 1), ((3, 3), 1, 2), ((3, 3), 2, 1),
                                            ((3, 2), 2, 2), ((1, 1), 2, 2), ((3, 3), 1, 1), ((2, 3), 1, 1),
                                            ((3, 3), 3, 1), ((3, 3), 1, 3)])
@pytest.mark.parametrize('fname', ['binom4', '2d3x2', 'none'])
def test_matches_reference(kernel, up, down, fname):
    for flip_weight, flip_filter in itertools.product([True, False], [False, True]):
        _run_case(kernel, up, down, 1, 1, flip_weight, flip_filter, fname)

@pytest.mark.parametrize('padding', [0, 2, [1, 0], [2, 1, 0, 3], [-1, 0, 1, -1], [0, 1, 1, 0]])
@pytest.mark.parametrize('up,down', [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_padding_variants(padding, up, down):
    _run_case((3, 3), up, down, padding, 1, up == 1, False, 'binom4')

@pytest.mark.parametrize('up,down,kernel', [(1, 1, (3, 3)), (2, 1, (3, 3)), (1, 2, (3, 3)), (2, 1, (1, 1)),
                                            (1, 2, (1, 1)), (2, 2, (3, 3))])
def test_groups(up, down, kernel):
    _run_case(kernel, up, down, 1, 2, up == 1, False, 'binom4')
    _run_case(kernel, up, down, [0, 1, 1, 0], 3, False, True, 'box2')

@pytest.mark.parametrize('up,down', [(2, 1), (1, 2), (2, 2)])
def test_separable_filter(up, down):
    _run_case((3, 3), up, down, 0, 1, up == 1, False, 'sep8', separable=True)
    _run_case((3, 3), up, down, 0, 1, up == 1, False, 'binom4', separable=True)

#----------------------------------------------------------------------------

@pytest.mark.parametrize('up,down,kernel', [(1, 1, (3, 3)), (2, 1, (3, 3)), (1, 2, (3, 3)), (1, 2, (1, 1)),
                                            (2, 1, (1, 1))])
@pytest.mark.parametrize('gradfix', [False, True])
def test_gradcheck(monkeypatch, up, down, kernel, gradfix):
    monkeypatch.setattr(conv2d_gradfix, 'enabled', gradfix)
    g = torch.Generator().manual_seed(1)
    x = torch.randn([1, 2, 4, 4], generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn([2, 2, *kernel], generator=g, dtype=torch.float64, requires_grad=True)
    f, _ = _filter('box2')
    fn = lambda x, w: conv2d_resample.conv2d_resample(x, w, f=f, up=up, down=down, padding=1, flip_weight=(up == 1))
    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))

def test_bad_arguments():
    x = torch.zeros([1, 2, 4, 4])
    w = torch.zeros([2, 2, 3, 3])
    with pytest.raises(ValueError, match='dtype'):
        conv2d_resample.conv2d_resample(x, w.double())
    with pytest.raises(ValueError, match='up'):
        conv2d_resample.conv2d_resample(x, w, up=0)
    with pytest.raises(ValueError, match='f must'):
        conv2d_resample.conv2d_resample(x, w, f=torch.ones([2, 2], dtype=torch.float64))

#----------------------------------------------------------------------------
