"""CPU fast paths against the plain paths: channels-last tri-plane gathers, the whole tri-plane G, heap tuning."""

import torch

from torch_utils.ops import host_malloc, upfirdn2d
from training.volumetric_rendering import renderer as R

#----------------------------------------------------------------------------

def test_channels_last_gathers_match_grid_sample():
    g = torch.Generator().manual_seed(1)
    planes = torch.randn([2, 3, 5, 7, 9], generator=g, dtype=torch.float64, requires_grad=True)
    coords = (torch.rand([2, 50, 3], generator=g, dtype=torch.float64) * 2.4 - 1.2).requires_grad_(True) # some outside
    axes = R.generate_planes()
    ref = R.sample_from_planes(axes, planes, coords, box_warp=2.0)
    out = R.sample_from_planes_cl(axes, R.planes_channels_last(planes), planes.shape, coords, box_warp=2.0)
    assert out.shape == ref.shape == (2, 3, 50, 5) and out.is_contiguous()
    assert torch.allclose(out, ref, rtol=0, atol=1e-12)
    dy = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(out, [planes, coords], dy), torch.autograd.grad(ref, [planes, coords], dy)):
        assert torch.allclose(a, b, rtol=0, atol=1e-10)

def test_renderer_fast_sampling_equals_plain(monkeypatch):
    from training.triplane import OSGDecoder
    torch.manual_seed(0)
    decoder = OSGDecoder(8, {'decoder_lr_mul': 1, 'decoder_output_dim': 8})
    planes = torch.randn([2, 3, 8, 16, 16], requires_grad=True)
    ro = torch.tensor([[0.0, 0.0, 2.7]]).repeat(2, 4096, 1)
    rd = torch.nn.functional.normalize(torch.randn([2, 4096, 3]) * 0.1 + torch.tensor([0.0, 0.0, -1.0]), dim=-1)
    opts = dict(ray_start=2.25, ray_end=3.3, box_warp=1.6, depth_resolution=4, depth_resolution_importance=4,
                disparity_space_sampling=False, clamp_mode='softplus')
    results = []
    for fast in (False, True):
        monkeypatch.setattr(R, 'fast_cpu_sampling', fast)
        torch.manual_seed(123) # same stratified jitter and importance draws
        rgb, depth, w = R.ImportanceRenderer()(planes, decoder, ro, rd, opts)
        grad, = torch.autograd.grad((rgb.square().sum() + depth.sum()), planes)
        results.append((rgb, depth, w, grad))
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5) # float32 summation order only

def test_tiny_generator_fast_equals_plain(monkeypatch):
    """Whole TriPlaneGenerator (backbone upsampling, renderer, SR): seeded outputs and gradients within 1e-4."""
    from tests.training.test_triplane import _cameras, _tiny_G
    G = _tiny_G().train()
    z = torch.randn([2, 16], generator=torch.Generator().manual_seed(0))
    c = _cameras(2)
    outs = []
    for fast in (False, True):
        monkeypatch.setattr(R, 'fast_cpu_sampling', fast)
        monkeypatch.setattr(upfirdn2d, 'cpu_fast', fast)
        G.zero_grad(set_to_none=True)
        torch.manual_seed(7)
        out = G(z, c, neural_rendering_resolution=32) # 64 would hit the in-place image_raw quirk (spec g.1) in backward
        (out['image'].square().mean() + out['image_depth'].mean()).backward()
        grads = [p.grad.clone() for p in G.parameters() if p.grad is not None]
        outs.append([out['image'].detach(), out['image_raw'].detach(), out['image_depth'].detach()] + grads)
    assert len(outs[0]) == len(outs[1]) > 10
    for a, b in zip(*outs):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()) + 1e-7)

def test_host_malloc_tune_and_restore():
    ok = host_malloc.tune()
    assert ok == host_malloc.active
    x = torch.randn([1024, 1024]) # > old mmap threshold: served from the heap now
    assert torch.equal(x * 2, x + x)
    assert host_malloc.tune(False) == ok and not host_malloc.active

#----------------------------------------------------------------------------
