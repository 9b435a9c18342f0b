"""3DGP density cut for the Non-Flatness Score: marcher math, both marcher passes, quantile chunking, nfs256 end to end."""

import math

import numpy as np
import pytest
import torch

from eg3d_ext import camera, generator
from eg3d_ext.generator import march, quantile
from tests.eg3d_ext._tiny import tiny_G
from tests.metrics._metrics_helpers import ref_nfs

#----------------------------------------------------------------------------

def _ref_march(rgb, sigma, t, q):
    """Independent numpy compositing of spec 1.6 step 5 with the density cut."""
    sigma = sigma.copy()
    if q > 0:
        sigma[sigma < np.quantile(sigma, q)] = 0
    delta = np.concatenate([t[..., 1:] - t[..., :-1], np.full_like(t[..., :1], 1e10)], -1)
    alpha = 1 - np.exp(-sigma * delta)
    trans = np.cumprod(np.concatenate([np.ones_like(alpha[..., :1]), 1 - alpha + 1e-10], -1), -1)[..., :-1]
    w = alpha * trans
    return (w[..., None] * rgb).sum(-2), (w * t).sum(-1)

def test_march_cut_matches_reference():
    rng = np.random.RandomState(0)
    rgb, sigma = rng.randn(3, 5, 7, 3), rng.gamma(1.0, 2.0, size=[3, 5, 7])
    t = np.sort(rng.uniform(0.75, 1.25, size=[3, 5, 7]), -1)
    for q in (0.0, 0.5, 0.9):
        got_rgb, got_depth, w = march(*(torch.from_numpy(a) for a in (rgb, sigma, t)), cut_quantile=q)
        ref_rgb, ref_depth = _ref_march(rgb, sigma, t, q)
        np.testing.assert_allclose(got_rgb.numpy(), ref_rgb, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got_depth.numpy(), ref_depth, rtol=1e-10, atol=1e-12)
    # With the cut, samples below the median get no weight (alpha = 0).
    w = march(*(torch.from_numpy(a) for a in (rgb, sigma, t)), cut_quantile=0.5)[2].numpy()
    assert np.all(w[sigma < np.quantile(sigma, 0.5)] == 0)

def test_quantile_past_torch_limit_matches_torch():
    x = torch.randn(1001, dtype=torch.float64)
    for q in (0.0, 0.25, 0.5, 0.77, 1.0):
        assert float(quantile(x, q, max_numel=100)) == pytest.approx(float(torch.quantile(x, q)), rel=1e-12)

#----------------------------------------------------------------------------

class _MarchSpy:
    def __init__(self, monkeypatch):
        self.calls, self.orig = [], generator.march
        monkeypatch.setattr(generator, 'march', self)
    def __call__(self, rgb, sigma, t, use_inf_depth=True, cut_quantile=0):
        self.calls.append(dict(shape=tuple(sigma.shape), cut=cut_quantile))
        return self.orig(rgb, sigma, t, use_inf_depth, cut_quantile)

def test_cut_in_both_passes_and_chunked_quantile(monkeypatch):
    torch.manual_seed(0)
    G = tiny_G(rendering_kwargs=dict(depth_resolution=6, depth_resolution_importance=6, max_batch_res=8)).eval()
    assert G.rendering_kwargs['cut_quantile'] == 0 # off unless a metric asks for it
    z, c = torch.randn(2, 16), torch.eye(3)[:2]
    spy = _MarchSpy(monkeypatch)
    G(z, c) # 16x16 > max_batch_res, but no cut: one render of all rays
    assert [k['shape'] for k in spy.calls] == [(2, 256, 6), (2, 256, 12)] and {k['cut'] for k in spy.calls} == {0}
    spy.calls.clear()
    G.rendering_kwargs['cut_quantile'] = 0.5
    monkeypatch.setattr(generator, 'QUANTILE_MAX_NUMEL', 2 * 6 * 3 * 100) # -> chunks of 100 rays
    out = G(z, c)
    rays = [k['shape'][1] for k in spy.calls[::2]]
    assert rays == [100, 100, 56] and all(k['cut'] == 0.5 for k in spy.calls)
    assert [k['shape'][2] for k in spy.calls] == [6, 12] * 3 # coarse pass and merged pass both cut
    # Cut depths differ from uncut ones; empty rays whose samples were all cut drift toward 0 (spec 7 quirk).
    assert out['image_depth'].shape == (2, 1, 16, 16) and torch.isfinite(out['image_depth']).all()

#----------------------------------------------------------------------------

def test_nfs256_protocol_end_to_end(monkeypatch):
    """compute_nfs on a tiny 3DGP G: eval-mode full renders with cut_quantile 0.5 in both marcher passes, frontal prior
    angles, raw (unadapted) depth; the score equals the spec's histogram entropy computed independently."""
    from metrics import metric_utils, non_flatness
    torch.manual_seed(0)
    G = tiny_G(c_dim=0, camera_generator_kwargs=None, rendering_kwargs=dict(depth_resolution=6,
        depth_resolution_importance=6, max_batch_res=8))
    spy = _MarchSpy(monkeypatch)
    seen = []
    orig_synthesis = generator.Generator.synthesis
    def synthesis(self, ws, c, **kwargs):
        out = orig_synthesis(self, ws, c, **kwargs)
        seen.append(dict(training=self.training, cut=self.rendering_kwargs['cut_quantile'], c25=c.clone(),
                         depth=out['image_depth'].clone(), res=out['image'].shape[-1]))
        return out
    monkeypatch.setattr(generator.Generator, 'synthesis', synthesis)
    nfs = non_flatness.compute_nfs(metric_utils.MetricOptions(G=G), num_gen=6, batch_size=4)
    assert G.rendering_kwargs['cut_quantile'] == 0 and G.training # metric works on a private copy
    assert len(seen) == 2 and all(not s['training'] and s['cut'] == 0.5 and s['res'] == 256 for s in seen) # nfs256 protocol
    assert spy.calls and all(k['cut'] == 0.5 for k in spy.calls) and len(spy.calls) == 4 # 2 batches x 2 passes
    params = camera.c25_to_params(torch.cat([s['c25'] for s in seen]))
    np.testing.assert_allclose(params[:, camera.IDX['yaw']].numpy(), 0, atol=1e-5) # frontal prior angles
    np.testing.assert_allclose(params[:, camera.IDX['pitch']].numpy(), math.pi / 2, atol=1e-5)
    depth = torch.cat([s['depth'] for s in seen])[:6]
    assert nfs == pytest.approx(ref_nfs(depth, 0.75, 1.25), rel=1e-5)
    assert 1 <= nfs <= 64

#----------------------------------------------------------------------------
