"""Tests for eg3d_ext.camera_generator: posterior support, OT regularizer, gradients, mean forcing."""

import numpy as np
import scipy.optimize
import torch

from eg3d_ext import camera
from eg3d_ext.camera_generator import CameraGenerator, camera_emd_loss, force_mean_loss, sorted_w2

def _cg(c_dim=5, **kw):
    torch.manual_seed(0)
    return CameraGenerator(z_dim=8, c_dim=c_dim, bounds=camera.CameraPrior('uniform').bounds(), hid_dim=32, **kw)

def test_posterior_inside_prior_box_even_for_extreme_weights():
    cg = _cg()
    with torch.no_grad():
        for p in cg.parameters():
            p.mul_(1000) # saturate the sigmoids
    prior = camera.CameraPrior('uniform').sample(512)
    post = cg(prior, torch.randn(512, 8) * 10, torch.eye(5)[torch.randint(5, [512])])
    for k, (lo, hi) in cg.bounds.items():
        v = post[:, camera.IDX[k]]
        assert torch.all(v >= lo - 1e-5) and torch.all(v <= hi + 1e-5), k
    assert torch.all(post[:, camera.IDX['radius']] == 1) and torch.all(post[:, camera.IDX['roll']] == 0)

def test_sorted_w2_equals_exact_assignment_ot():
    rng = np.random.RandomState(0)
    a, b = rng.randn(40, 3), rng.randn(40, 3) * 2 + 1
    ours = sorted_w2(torch.from_numpy(b), torch.from_numpy(a)).numpy()
    for k in range(3): # uniform marginals, equal sizes: exact OT = optimal assignment
        M = (b[:, k, None] - a[None, :, k]) ** 2
        r, c = scipy.optimize.linear_sum_assignment(M)
        assert np.isclose(ours[k], M[r, c].mean())

def test_regularizer_zero_for_identical_sets_and_grows_with_distance():
    prior = camera.CameraPrior('uniform').sample(64, generator=torch.Generator().manual_seed(0))
    assert camera_emd_loss(prior, prior) == 0
    shifted = [prior.clone() for _ in range(3)]
    losses = []
    for s, x in zip([0.05, 0.2, 0.5], shifted):
        x[:, 0] += s
        losses.append(float(camera_emd_loss(x, prior)))
    assert 0 < losses[0] < losses[1] < losses[2]
    assert np.isclose(losses[0], 2.0 * 0.05 ** 2, rtol=1e-4) # origin weight 2, raw units

def test_gradients_flow_into_camera_generator():
    cg = _cg()
    prior = camera.CameraPrior('uniform').sample(64)
    post = cg(prior, torch.randn(64, 8), torch.eye(5)[torch.randint(5, [64])])
    loss = camera_emd_loss(post, prior) + force_mean_loss(post, torch.tensor([0, np.pi / 2, 0]))
    loss.backward()
    grads = {n: p.grad for n, p in cg.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads['origin_adaptor.fc1.weight'].abs().sum() > 0 and grads['look_at_adaptor.project_z.weight'].abs().sum() > 0

def test_force_mean_pulls_posterior_mean_to_prior_mean():
    cg = _cg(c_dim=0)
    opt = torch.optim.Adam(cg.parameters(), lr=1e-2)
    mu = torch.tensor([0, np.pi / 2, 0])
    prior_s = camera.CameraPrior('uniform')
    with torch.no_grad():
        cg.origin_adaptor.fc1.bias.add_(torch.tensor([1.0, 1.0, 0, 0]) / 0.1) # push yaw/pitch high
    first = None
    for _ in range(60):
        post = cg(prior_s.sample(64), torch.randn(64, 8))
        loss = force_mean_loss(post, mu)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad(); loss.backward(); opt.step()
    assert float(loss) < 0.3 * first

def test_reference_bugs_toggle_look_at_radius_bound():
    b = dict(camera.CameraPrior('uniform').bounds(), la_pitch=(0.3, 3.0))
    ours = CameraGenerator(8, 0, b, hid_dim=8)
    ref = CameraGenerator(8, 0, b, hid_dim=8, reference_bugs=True)
    logits = torch.full([1, 8], -30.0)
    assert abs(ours.denormalize(logits)[0, 7]) < 1e-6 and abs(ref.denormalize(logits)[0, 7] - 0.3) < 1e-6
