"""Tests for torch_utils.ops.fma: value, broadcast-reduced gradients, double backward."""

import pytest
import torch

from torch_utils.ops import fma

SHAPES = [
    ([2, 3], [2, 3], [2, 3]),
    ([4, 1, 3], [1, 5, 3], [3]),         # broadcasting in a and b, c has fewer dims
    ([1], [2, 3, 1], [2, 1, 4]),
    ([3, 1, 1], [1], [1, 2, 2]),
]

@pytest.mark.parametrize('sa,sb,sc', SHAPES)
def test_fma_value_and_grads(sa, sb, sc):
    g = torch.Generator().manual_seed(0)
    a, b, c = [torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True) for s in (sa, sb, sc)]
    out = fma.fma(a, b, c)
    expect = a * b + c # autograd of plain ops = independent reference for the gradients
    torch.testing.assert_close(out, expect, rtol=1e-14, atol=1e-14)
    dy = torch.randn(out.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad(out, [a, b, c], dy)
    ref = torch.autograd.grad(expect, [a, b, c], dy)
    for x, gx, rx in zip([a, b, c], got, ref):
        assert gx.shape == x.shape
        torch.testing.assert_close(gx, rx, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(fma.fma, [a, b, c])
    assert torch.autograd.gradgradcheck(fma.fma, [a, b, c])

def test_fma_partial_requires_grad():
    a = torch.randn([2, 3], requires_grad=True)
    b = torch.randn([3])
    c = torch.randn([2, 1])
    out = fma.fma(a, b, c)
    out.sum().backward()
    torch.testing.assert_close(a.grad, b.expand(2, 3))
    assert b.grad is None and c.grad is None
