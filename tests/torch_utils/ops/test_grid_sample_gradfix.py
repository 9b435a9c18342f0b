"""Tests for grid_sample_gradfix against a gather-based bilinear sampler that autograd can differentiate to any order."""

import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import grid_sample_gradfix

#----------------------------------------------------------------------------

def ref_grid_sample(inp, grid):
    """Bilinear, zeros padding, align_corners=False, written with gathers."""
    N, C, H, W = inp.shape
    ix = ((grid[..., 0] + 1) * W - 1) / 2
    iy = ((grid[..., 1] + 1) * H - 1) / 2
    x0, y0 = ix.detach().floor(), iy.detach().floor()
    flat = inp.reshape(N, C, H * W)
    out = 0
    for xs in (x0, x0 + 1):
        for ys in (y0, y0 + 1):
            weight = (1 - (ix - xs).abs()) * (1 - (iy - ys).abs())
            valid = ((xs >= 0) & (xs <= W - 1) & (ys >= 0) & (ys <= H - 1)).to(inp.dtype)
            idx = (ys.clamp(0, H - 1) * W + xs.clamp(0, W - 1)).long().reshape(N, 1, -1).expand(N, C, -1)
            vals = flat.gather(2, idx).reshape(N, C, *grid.shape[1:3])
            out = out + vals * (weight * valid)[:, None]
    return out

def _data(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    inp = torch.randn([2, 3, 5, 4], generator=g, dtype=dtype, requires_grad=True)
    grid = (torch.rand([2, 3, 4, 2], generator=g, dtype=dtype) * 2.4 - 1.2).requires_grad_(True)  # Some outside.
    return inp, grid

@pytest.fixture
def enabled(monkeypatch):
    monkeypatch.setattr(grid_sample_gradfix, 'enabled', True)

#----------------------------------------------------------------------------

@pytest.mark.parametrize('flag', [False, True])
def test_forward_and_first_order(monkeypatch, flag):
    monkeypatch.setattr(grid_sample_gradfix, 'enabled', flag)
    inp, grid = _data()
    y = grid_sample_gradfix.grid_sample(inp, grid)
    y_ref = ref_grid_sample(inp, grid)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(y, F.grid_sample(inp, grid, mode='bilinear', padding_mode='zeros',
                                                align_corners=False), rtol=0, atol=0)
    dy = torch.randn_like(y)
    for a, r in zip(torch.autograd.grad(y, [inp, grid], dy), torch.autograd.grad(y_ref, [inp, grid], dy)):
        torch.testing.assert_close(a, r)

def test_gradcheck_and_gradgradcheck(enabled):
    inp, grid = _data()
    assert torch.autograd.gradcheck(grid_sample_gradfix.grid_sample, (inp, grid))
    grid_fixed = grid.detach()
    assert torch.autograd.gradgradcheck(lambda x: grid_sample_gradfix.grid_sample(x, grid_fixed), (inp,))

def test_input_gradient_is_differentiable_wrt_grid(enabled):
    # grad_input as a function of (grad_output, grid): the path EG3D's R1 penalty takes through the augment pipe.
    inp, grid = _data()
    dy = torch.randn([2, 3, 3, 4], dtype=torch.float64, requires_grad=True)
    def gi(dy, grid):
        return torch.autograd.grad(grid_sample_gradfix.grid_sample(inp, grid), inp, dy, create_graph=True)[0]
    assert torch.autograd.gradcheck(gi, (dy, grid))

def test_r1_style_second_order_matches_reference(enabled):
    results = []
    for sampler in (grid_sample_gradfix.grid_sample, ref_grid_sample):
        inp, grid = _data(seed=3)
        w = torch.linspace(-1, 1, 3, dtype=torch.float64).reshape(1, 3, 1, 1).requires_grad_(True)
        y = (sampler(inp, grid) * w).tanh().sum()
        gx, = torch.autograd.grad(y, inp, create_graph=True)
        results.append(torch.autograd.grad(gx.square().sum(), [w, grid, inp], allow_unused=True))
    for a, r in zip(*results):
        if a is None or r is None:
            assert a is None or a.abs().max() == 0
            continue
        torch.testing.assert_close(a, r)

def test_grid_gradient_of_grid_gradient_raises(enabled):
    inp, grid = _data()
    gg, = torch.autograd.grad(grid_sample_gradfix.grid_sample(inp, grid).sum(), grid, create_graph=True)
    with pytest.raises(NotImplementedError, match='grid gradient'):
        torch.autograd.grad(gg.sum(), grid)

def test_bad_shapes(enabled):
    with pytest.raises(ValueError, match='grid'):
        grid_sample_gradfix.grid_sample(torch.zeros([1, 1, 4, 4]), torch.zeros([1, 4, 4, 3]))

#----------------------------------------------------------------------------
