"""Tests for eg3d_ext.generator: shapes, patch rendering geometry, cameras, renderer math, tri-plane gathers vs
grid_sample, pickle round-trip."""

import os
import pickle
import subprocess
import sys

import numpy as np
import torch

from eg3d_ext import camera
from eg3d_ext.generator import march, planes_for_gathers, rays_from_c25, sample_pdf, sample_tri_planes
from eg3d_ext.loss_3dgp import extract_patches
from tests.eg3d_ext._tiny import tiny_G
from training.volumetric_rendering import renderer as eg3d_renderer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

def test_forward_shapes_patch_and_full():
    torch.manual_seed(0)
    G = tiny_G()
    assert G.learns_camera and G.num_ws == G.backbone.num_ws
    z, c = torch.randn(4, 16), torch.eye(3)[[0, 1, 2, 0]]
    out = G(z, c, patch_params=torch.tensor([[0.5, 0.2, 0.1]]).repeat(4, 1))
    assert out['image'].shape == (4, 3, 8, 8) and out['image_depth'].shape == (4, 1, 8, 8)
    assert out['image_depth_adapted'].shape == (4, 1, 8, 8) and out['camera_params'].shape == (4, 25)
    G.eval()
    out = G(z, c, camera_mode='prior', truncation_psi=0.7, noise_mode='const')
    assert out['image'].shape == (4, 3, 16, 16) and torch.isfinite(out['image']).all()
    # Depth lies inside the ray range (weights sum to ~1 with the infinite last interval).
    assert out['image_depth'].min() > 0.7 and out['image_depth'].max() < 1.3
    c25 = camera.params_to_c25(torch.tensor([[0.0, np.pi / 2, 0, 30, 1, 0, 0, 0]]).repeat(4, 1))
    assert torch.equal(G(z, c, camera_params=c25)['camera_params'], c25)
    assert G.sample(torch.zeros(4, 5, 3), None, z, c)['sigma'].shape == (4, 5, 1)

def test_learned_vs_prior_cameras():
    torch.manual_seed(0)
    G = tiny_G()
    z, c = torch.randn(8, 16), torch.eye(3)[torch.arange(8) % 3]
    prior = G.camera_prior.sample(8)
    p_prior, _ = G.sample_cameras(z, c, 'prior', prior=prior)
    p_post, c25 = G.sample_cameras(z, c, 'learned', prior=prior)
    assert torch.equal(p_prior, prior) and not torch.allclose(p_post[:, 3], prior[:, 3])
    assert torch.allclose(c25, camera.params_to_c25(p_post))

def test_patch_rays_equal_subwindow_of_full_rays():
    c25 = camera.params_to_c25(camera.CameraPrior('uniform').sample(2))
    _, full = rays_from_c25(c25, 9)
    # scale 0.5 at offsets (0.5, 0.5): x in right half, y offset from the bottom -> top-right quarter.
    _, patch = rays_from_c25(c25, 5, torch.tensor([[0.5, 0.5, 0.5]]).repeat(2, 1))
    assert torch.allclose(patch.reshape(2, 5, 5, 3), full.reshape(2, 9, 9, 3)[:, :5, 4:], atol=1e-6)

def test_real_patch_extraction_uses_same_window():
    img = torch.arange(81.0).reshape(1, 1, 9, 9)
    patch = extract_patches(img, torch.tensor([[0.5, 0.5, 0.5]]), 5)
    assert torch.allclose(patch, img[:, :, :5, 4:])

def test_march_matches_closed_form():
    t = torch.tensor([[1.0, 2.0, 4.0]])
    sigma = torch.tensor([[0.5, 1.0, 2.0]])
    rgb = torch.tensor([[[1.0, 0, 0], [0, 1, 0], [0, 0, 1]]])
    out, depth, w = march(rgb, sigma, t)
    a = 1 - np.exp(-np.array([0.5 * 1, 1.0 * 2, 2.0 * 1e10]))
    T = np.cumprod(np.r_[1, 1 - a[:-1] + 1e-10])
    assert np.allclose(w.numpy()[0], a * T, atol=1e-6) and np.isclose(float(depth), (a * T * [1, 2, 4]).sum(), atol=1e-5)

def test_sample_pdf_concentrates_on_heavy_bin():
    torch.manual_seed(0)
    bins = torch.linspace(0, 1, 11).expand(4, 11)
    w = torch.zeros(4, 10); w[:, 7] = 1
    s = sample_pdf(bins, w, 2000)
    assert ((s >= 0.7) & (s <= 0.8)).float().mean() > 0.99

def test_tri_plane_gathers_equal_grid_sample():
    """EG3D's gather sampler, rescaled to 3DGP's corner-aligned planes, equals grid_sample(align_corners=True) in
    float64 (values and gradients w.r.t. planes and points, points outside the cube included)."""
    g = torch.Generator().manual_seed(1)
    planes = torch.randn([2, 3, 5, 9, 9], generator=g, dtype=torch.float64, requires_grad=True)
    points = (torch.rand([2, 60, 3], generator=g, dtype=torch.float64) * 1.4 - 0.7).requires_grad_(True) # cube 0.5
    planes_cl = planes_for_gathers(planes)
    assert planes_cl is not None # CPU, planes need gradients: EG3D's fast path applies
    ref = sample_tri_planes(planes, points, 0.5)
    out = sample_tri_planes(planes, points, 0.5, planes_cl)
    assert out.shape == ref.shape == (2, 60, 5) and (ref == 0).all(-1).any() # some points fall outside
    assert torch.allclose(out, ref, rtol=0, atol=1e-12)
    dy = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(out, [planes, points], dy), torch.autograd.grad(ref, [planes, points], dy)):
        assert torch.allclose(a, b, rtol=0, atol=1e-10)
    # The corner texel centres: (x, y, z) = (-0.5, 0.5, 0.5) reads XY[0, -1], XZ[-1, 0] and YZ[-1, -1].
    corner = torch.tensor([[[-0.5, 0.5, 0.5]]], dtype=torch.float64)
    with torch.no_grad():
        p = planes[:1]
        want = (p[0, 0, :, 8, 0] + p[0, 1, :, 8, 0] + p[0, 2, :, 8, 8]) / 3
        assert torch.allclose(sample_tri_planes(p, corner, 0.5, planes_cl[:3 * 81])[0, 0], want, atol=1e-12)
    assert planes_for_gathers(planes, points) is None # points need gradients: grid_sample is faster
    with torch.no_grad():
        assert planes_for_gathers(planes) is None # forward-only: grid_sample is faster

def test_generator_gathers_equal_grid_sample(monkeypatch):
    """Whole tiny 3DGP G in training mode (patches, prior cameras: constant rays): float32 outputs and every
    parameter gradient within 1e-4 relative with the gather path on and off. Learned cameras keep grid_sample."""
    calls = []
    spy = lambda *a, **kw: calls.append(1) or sample_from_planes_cl(*a, **kw)
    sample_from_planes_cl = eg3d_renderer.sample_from_planes_cl
    monkeypatch.setattr(eg3d_renderer, 'sample_from_planes_cl', spy)
    torch.manual_seed(0)
    G = tiny_G().train()
    z, c = torch.randn(4, 16), torch.eye(3)[[0, 1, 2, 0]]
    pp = torch.tensor([[0.5, 0.2, 0.1]]).repeat(4, 1)
    outs = []
    for fast in (False, True):
        monkeypatch.setattr(eg3d_renderer, 'fast_cpu_sampling', fast)
        G.zero_grad(set_to_none=True)
        torch.manual_seed(7) # same camera, stratified and importance draws
        out = G(z, c, camera_mode='prior', patch_params=pp)
        (out['image'].square().mean() + out['image_depth_adapted'].mean()).backward()
        grads = [p.grad.clone() for p in G.parameters() if p.grad is not None]
        outs.append([out['image'].detach(), out['image_depth'].detach()] + grads)
        assert len(calls) == (2 if fast else 0) # coarse and fine pass
    G(z, c, camera_mode='learned', patch_params=pp)
    assert len(calls) == 2 # rays depend on the camera generator: no gathers
    assert len(outs[0]) == len(outs[1]) > 10
    for a, b in zip(*outs):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()) + 1e-7)

def test_progressive_update_schedules():
    G = tiny_G()
    G.progressive_update(0); assert float(G.nerf_noise_std) == 1.0
    G.progressive_update(2500); assert abs(float(G.nerf_noise_std) - 0.5) < 1e-6
    G.progressive_update(1e6); assert float(G.nerf_noise_std) == 0 and float(G.depth_adaptor.progress_coef) == 1

def test_pickle_roundtrip_in_fresh_process(tmp_path):
    torch.manual_seed(0)
    G = tiny_G().eval()
    G.progressive_update(3000)
    with torch.no_grad():
        G.depth_adaptor.near_plane_offset_raw.fill_(-1.5)
    path = tmp_path / 'G.pkl'
    with open(path, 'wb') as f:
        pickle.dump(dict(G_ema=G), f)
    code = f'''
import pickle, sys, torch
sys.modules.pop('eg3d_ext', None)
with open({str(path)!r}, 'rb') as f:
    G = pickle.load(f)['G_ema']
assert not any(m.startswith('eg3d_ext') for m in sys.modules), [m for m in sys.modules if m.startswith('eg3d_ext')]
assert type(G.camera_generator).__name__ == 'CameraGenerator' and type(G.depth_adaptor).__name__ == 'DepthAdaptor'
assert float(G.depth_adaptor.near_plane_offset_raw) == -1.5 and abs(float(G.depth_adaptor.progress_coef) - 0.3) < 1e-6
torch.manual_seed(1)
z = torch.randn(2, 16); c = torch.eye(3)[:2]
out = G(z, c, camera_mode='learned', noise_mode='const')
print(float(out['image'].abs().sum()), float(out['camera_params'].abs().sum()))
'''
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    res = subprocess.run([sys.executable, '-c', code], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    torch.manual_seed(1)
    z = torch.randn(2, 16); c = torch.eye(3)[:2]
    with torch.no_grad():
        out = G(z, c, camera_mode='learned', noise_mode='const')
    vals = [float(v) for v in res.stdout.split()]
    assert np.allclose(vals, [float(out['image'].abs().sum()), float(out['camera_params'].abs().sum())], rtol=1e-4)
