"""Tests for training.volumetric_rendering: ray sampler, tri-plane projection, ray marcher and importance renderer."""

import math
import pickle

import numpy as np
import pytest
import torch

from training.volumetric_rendering import math_utils
from training.volumetric_rendering.ray_marcher import MipRayMarcher2
from training.volumetric_rendering.ray_sampler import RaySampler
from training.volumetric_rendering.renderer import (ImportanceRenderer, generate_planes, project_onto_planes,
    sample_from_planes)

#----------------------------------------------------------------------------
# Ray sampler vs. the pinhole model in float64.

def _random_pose(gen):
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.det(q))
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3], pose[:3, 3] = q, torch.randn(3, generator=gen, dtype=torch.float64)
    return pose

def test_ray_sampler_matches_pinhole_formula():
    gen = torch.Generator().manual_seed(0)
    res = 5
    poses = torch.stack([_random_pose(gen) for _ in range(2)])
    K = torch.tensor([[[1.3, 0.05, 0.45], [0, 1.1, 0.55], [0, 0, 1]], [[2.0, 0, 0.5], [0, 2.0, 0.5], [0, 0, 1]]],
        dtype=torch.float64)
    origins, dirs = RaySampler()(poses.float(), K.float(), res)
    assert origins.shape == dirs.shape == (2, res * res, 3)
    for n in range(2):
        for i in range(res):
            for j in range(res):
                pix = torch.tensor([(j + 0.5) / res, (i + 0.5) / res, 1.0], dtype=torch.float64)
                d = poses[n, :3, :3] @ torch.linalg.solve(K[n], pix)
                d = d / d.norm()
                torch.testing.assert_close(dirs[n, i * res + j].double(), d, atol=2e-6, rtol=0)
        torch.testing.assert_close(origins[n].double(), poses[n, :3, 3].expand(res * res, 3), atol=1e-6, rtol=0)

#----------------------------------------------------------------------------
# Tri-plane projection quirk: (x, y), (x, z), (z, x).

def test_projection_quirk_xy_xz_zx():
    axes = generate_planes()
    assert axes.shape == (3, 3, 3) and axes.dtype == torch.float32
    p = torch.tensor([[[0.1, -0.2, 0.3], [0.7, 0.4, -0.9]]])
    proj = project_onto_planes(axes, p).reshape(1, 3, 2, 2)
    x, y, z = p[0, :, 0], p[0, :, 1], p[0, :, 2]
    assert torch.equal(proj[0, 0], torch.stack([x, y], -1))
    assert torch.equal(proj[0, 1], torch.stack([x, z], -1))
    assert torch.equal(proj[0, 2], torch.stack([z, x], -1))

def _ramp_planes(H=16, W=16):
    """Planes whose channel 0 equals the grid x (column) coordinate and channel 1 the grid y (row) coordinate."""
    cols = (torch.arange(W) + 0.5) / W * 2 - 1
    rows = (torch.arange(H) + 0.5) / H * 2 - 1
    feat = torch.stack([cols.expand(H, W), rows[:, None].expand(H, W)]) # [2, H, W]
    return feat.expand(1, 3, 2, H, W).contiguous()

def test_sample_from_planes_reads_projected_coordinates():
    planes = _ramp_planes()
    box_warp = 4.0
    pts = torch.rand(1, 20, 3) * 2.8 - 1.4 # inside the texel-centre range after scaling by 2/box_warp
    feats = sample_from_planes(generate_planes(), planes, pts, box_warp=box_warp)
    assert feats.shape == (1, 3, 20, 2)
    s = pts[0] * (2 / box_warp)
    expected = torch.stack([s[:, [0, 1]], s[:, [0, 2]], s[:, [2, 0]]]) # [3, M, 2]
    torch.testing.assert_close(feats[0], expected, atol=1e-5, rtol=0)
    far = sample_from_planes(generate_planes(), planes, torch.full((1, 1, 3), 10.0), box_warp=box_warp)
    assert torch.equal(far, torch.zeros_like(far)) # zero padding outside the planes

#----------------------------------------------------------------------------
# Ray marcher vs. a float64 loop reference.

def _march_reference(colors, densities, depths, white_back):
    N, M, S, C = colors.shape
    rgb = np.zeros((N, M, C)); depth = np.zeros((N, M, 1)); wsum = np.zeros((N, M, 1))
    for n in range(N):
        for m in range(M):
            T = 1.0
            for k in range(S - 1):
                delta = depths[n, m, k + 1, 0] - depths[n, m, k, 0]
                sigma = np.log1p(np.exp((densities[n, m, k, 0] + densities[n, m, k + 1, 0]) / 2 - 1))
                alpha = 1 - np.exp(-sigma * delta)
                w = alpha * T
                T *= 1 - alpha + 1e-10
                rgb[n, m] += w * (colors[n, m, k] + colors[n, m, k + 1]) / 2
                depth[n, m] += w * (depths[n, m, k, 0] + depths[n, m, k + 1, 0]) / 2
                wsum[n, m] += w
    depth = np.where(wsum > 0, depth / np.where(wsum > 0, wsum, 1), np.inf)
    depth = np.clip(depth, depths.min(), depths.max())
    if white_back:
        rgb = rgb + 1 - wsum
    return rgb * 2 - 1, depth, wsum

@pytest.mark.parametrize('white_back', [False, True])
def test_ray_marcher_matches_reference(white_back):
    gen = torch.Generator().manual_seed(1)
    colors = torch.rand(2, 3, 6, 4, generator=gen, dtype=torch.float64)
    densities = torch.randn(2, 3, 6, 1, generator=gen, dtype=torch.float64) * 3
    densities[1, 2] = -1e4 # empty ray: depth becomes the batch-wide max sample depth
    depths = torch.sort(torch.rand(2, 3, 6, 1, generator=gen, dtype=torch.float64) * 2 + 1, dim=2).values
    opts = dict(clamp_mode='softplus', white_back=white_back)
    rgb, depth, weights = MipRayMarcher2()(colors, densities, depths, opts)
    ref_rgb, ref_depth, ref_w = _march_reference(colors.numpy(), densities.numpy(), depths.numpy(), white_back)
    np.testing.assert_allclose(rgb.numpy(), ref_rgb, atol=1e-9)
    np.testing.assert_allclose(depth.numpy(), ref_depth, atol=1e-9)
    np.testing.assert_allclose(weights.sum(2).numpy(), ref_w, atol=1e-9)
    assert depth[1, 2, 0] == depths.max()
    with pytest.raises(ValueError, match='clamp_mode'):
        MipRayMarcher2()(colors, densities, depths, dict(clamp_mode='relu'))

#----------------------------------------------------------------------------
# Full renderer on an analytic scene: a slab of constant density, decoded from coordinates stored in the planes.

class _SlabDecoder(torch.nn.Module):
    """Density `d` for |z| < half (z read back from plane 1 = (x, z)), ~0 elsewhere; colour = constant 0.75."""
    def __init__(self, d, half, box_warp):
        super().__init__()
        self.d, self.half, self.box_warp = d, half, box_warp
        self.calls = []

    def forward(self, sampled_features, ray_directions):
        self.calls.append(sampled_features)
        z = sampled_features[:, 1, :, 1:2] * (self.box_warp / 2) # plane 1 row coordinate = z
        inside = z.abs() < self.half
        raw = torch.where(inside, torch.full_like(z, 1 + math.log(math.expm1(self.d))), torch.full_like(z, -60.0))
        return {'rgb': torch.full(z.shape[:-1] + (3,), 0.75), 'sigma': raw}

def _slab_rays(n_rays=4):
    o = torch.zeros(1, n_rays, 3)
    o[0, :, 0] = torch.linspace(-0.3, 0.3, n_rays)
    o[0, :, 2] = -1.0
    d = torch.zeros(1, n_rays, 3)
    d[..., 2] = 1.0
    return o, d

@pytest.mark.parametrize('importance', [0, 32])
def test_renderer_constant_density_slab(importance):
    d, half, box_warp = 5.0, 0.2, 3.0
    dec = _SlabDecoder(d, half, box_warp)
    o, dirs = _slab_rays()
    opts = dict(ray_start=0.5, ray_end=1.5, box_warp=box_warp, depth_resolution=256,
        depth_resolution_importance=importance, disparity_space_sampling=False, clamp_mode='softplus')
    torch.manual_seed(0)
    rgb, depth, wsum = ImportanceRenderer()(_ramp_planes(64, 64), dec, o, dirs, opts)
    assert rgb.shape == (1, 4, 3) and depth.shape == wsum.shape == (1, 4, 1)
    L, a = 2 * half, 1 - half # slab thickness, entry depth
    opacity = 1 - math.exp(-d * L)
    mean_depth = a + (1 / d - (L + 1 / d) * math.exp(-d * L)) / opacity
    torch.testing.assert_close(wsum, torch.full_like(wsum, opacity), atol=1.5e-2, rtol=0)
    torch.testing.assert_close(depth, torch.full_like(depth, mean_depth), atol=1e-2, rtol=0)
    torch.testing.assert_close(rgb, ((0.75 * wsum) * 2 - 1).expand(1, 4, 3), atol=1e-5, rtol=0)
    assert len(dec.calls) == (2 if importance else 1)

def test_renderer_random_draw_order_and_importance_range():
    """Coarse jitter rand [N,M,S,1] is drawn first, then the importance rand [N*M, S_f]."""
    box_warp, S, Sf = 3.0, 8, 6
    dec = _SlabDecoder(5.0, 0.2, box_warp)
    o, dirs = _slab_rays(3)
    opts = dict(ray_start=0.5, ray_end=1.5, box_warp=box_warp, depth_resolution=S, depth_resolution_importance=Sf,
        disparity_space_sampling=False, clamp_mode='softplus')
    renderer = ImportanceRenderer()
    torch.manual_seed(123)
    renderer(_ramp_planes(64, 64), dec, o, dirs, opts)
    torch.manual_seed(123)
    jitter = torch.rand(1, 3, S, 1)
    depths = torch.linspace(0.5, 1.5, S).reshape(1, 1, S, 1) + jitter * (1.0 / (S - 1))
    z_coarse = dec.calls[0][:, 1, :, 1] * (box_warp / 2)
    torch.testing.assert_close(z_coarse.reshape(1, 3, S), (depths[..., 0] - 1.0), atol=1e-5, rtol=0)
    # Fine samples: same weights -> same pdf, consuming the next random numbers.
    raw = dec(dec.calls[0], None)['sigma'].reshape(1, 3, S, 1)
    weights = MipRayMarcher2().compute_weights(raw, depths, opts)
    fine = renderer.sample_importance(depths, weights, Sf)
    z_fine = dec.calls[1][:, 1, :, 1] * (box_warp / 2)
    torch.testing.assert_close(z_fine.reshape(1, 3, Sf), fine[..., 0] - 1.0, atol=1e-5, rtol=0)
    mids = (depths[:, :, 1:] + depths[:, :, :-1]) / 2
    assert (fine >= mids[:, :, :1]).all() and (fine <= mids[:, :, S - 3:S - 2]).all() # last midpoint never used

def test_sample_pdf_deterministic_matches_inverse_cdf():
    bins = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    weights = torch.tensor([[1.0, 3.0, 0.0]])
    s = ImportanceRenderer().sample_pdf(bins, weights, 5, det=True)
    cdf = np.concatenate([[0], np.cumsum((weights[0].numpy() + 1e-5) / (weights.sum().item() + 3e-5))])
    expected = np.interp(np.linspace(0, 1, 5), cdf, bins[0].numpy())
    np.testing.assert_allclose(s[0].numpy(), expected, atol=1e-4)

#----------------------------------------------------------------------------

def test_ray_limits_box_and_auto_bounds():
    o = torch.tensor([[[0.0, 0.0, -2.0], [0.0, 5.0, -2.0], [0.1, 0.0, -2.0]]])
    d = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]])
    start, end = math_utils.get_ray_limits_box(o, d, box_side_length=1.0)
    torch.testing.assert_close(start[0, :, 0], torch.tensor([1.5, -1.0, 1.5]))
    torch.testing.assert_close(end[0, :, 0], torch.tensor([2.5, -2.0, 2.5]))
    renderer, seen = ImportanceRenderer(), {}
    stratified = renderer.sample_stratified
    def spy(ray_origins, ray_start, ray_end, *args):
        seen['start'], seen['end'] = ray_start.clone(), ray_end.clone()
        return stratified(ray_origins, ray_start, ray_end, *args)
    renderer.sample_stratified = spy
    opts = dict(ray_start='auto', ray_end='auto', box_warp=1.0, depth_resolution=4, depth_resolution_importance=0,
        disparity_space_sampling=False, clamp_mode='softplus')
    renderer(_ramp_planes(), _SlabDecoder(1.0, 10.0, 4.0), o, d, opts)
    # The missed ray gets [min start, max START] of the valid rays (EG3D quirk) = [1.5, 1.5].
    torch.testing.assert_close(seen['start'][0, :, 0], torch.tensor([1.5, 1.5, 1.5]))
    torch.testing.assert_close(seen['end'][0, :, 0], torch.tensor([2.5, 1.5, 2.5]))

#----------------------------------------------------------------------------

def test_linspace_batched():
    start, stop = torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [3.0]])
    out = math_utils.linspace(start, stop, 5)
    assert out.shape == (5, 2, 1)
    torch.testing.assert_close(out[:, 1, 0], torch.linspace(1, 3, 5))

def test_renderer_pickle_restores_without_init():
    """EG3D pickles restore these classes from state alone; plane_axes is an attribute, not a buffer."""
    r = ImportanceRenderer()
    assert 'plane_axes' not in dict(r.named_buffers()) and not r.state_dict()
    r2 = pickle.loads(pickle.dumps(r))
    assert torch.equal(r2.plane_axes, r.plane_axes) and isinstance(r2.ray_marcher, MipRayMarcher2)
    rs = pickle.loads(pickle.dumps(RaySampler()))
    assert rs.ray_origins_h is None and rs.rendering_options is None

#----------------------------------------------------------------------------

def test_renderer_gradcheck_wrt_planes():
    """float64 gradcheck of the render w.r.t. the tri-plane features (coarse pass only: the fine sample positions
    depend on the planes but are detached by design, which finite differences would see)."""
    class LinearDecoder(torch.nn.Module):
        def forward(self, feats, dirs):
            x = feats.mean(1)
            return {'rgb': torch.sigmoid(x[..., 1:]), 'sigma': x[..., :1] * 3}
    o = torch.tensor([[[0.05, -0.1, -1.0], [-0.1, 0.1, -1.0]]], dtype=torch.float64)
    d = torch.tensor([[[0.0, 0.1, 1.0], [0.1, 0.0, 1.0]]], dtype=torch.float64)
    d = d / d.norm(dim=-1, keepdim=True)
    opts = dict(ray_start=0.6, ray_end=1.4, box_warp=2.0, depth_resolution=6, depth_resolution_importance=0,
        disparity_space_sampling=False, clamp_mode='softplus')
    planes = torch.randn(1, 3, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    renderer = ImportanceRenderer()
    def fn(p):
        torch.manual_seed(0) # same jitter and importance samples on every evaluation
        rgb, depth, wsum = renderer(p, LinearDecoder(), o, d, opts)
        return rgb, depth, wsum
    assert torch.autograd.gradcheck(fn, (planes,), eps=1e-6, atol=1e-5)

#----------------------------------------------------------------------------
