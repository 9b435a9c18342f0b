"""Camera learning end to end: the G adversarial loss reaches the camera generator's yaw output (spec 2.4-2.6)."""

import math

import torch

from eg3d_ext.loss_3dgp import Loss3DGP
from tests.eg3d_ext._tiny import tiny_D, tiny_G

NO_CAMERA_REGS = dict(force_mean_weight=0.0, emd_weights=dict(origin=0.0, radius=0.0, fov=0.0, look_at=0.0))

def _gmain(learn_camera: bool, camera_reg_kwargs: dict = NO_CAMERA_REGS, cur_nimg: int = 300_000):
    """One Loss3DGP Gmain step as the training loop runs it (G trainable, D frozen); returns (G, posterior, loss)."""
    torch.manual_seed(0)
    G, D = tiny_G(c_dim=3), tiny_D(c_dim=3)
    G.train().requires_grad_(True)
    D.train().requires_grad_(False)
    loss = Loss3DGP('cpu', G, D, kd_weight=0, learn_camera=learn_camera, camera_reg_kwargs=camera_reg_kwargs)
    captured = {}
    def hook(_module, _inputs, out): # keep the posterior cameras that rendered the fakes
        if out.requires_grad:
            out.retain_grad()
        captured.setdefault('post', out)
    G.camera_generator.register_forward_hook(hook)
    z = torch.randn([4, G.z_dim])
    c = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0]), 3).float()
    real = torch.zeros([4, 3, 16, 16])
    loss.accumulate_gradients('Gmain', real, c, z, c, gain=1, cur_nimg=cur_nimg)
    return G, captured.get('post'), loss

#----------------------------------------------------------------------------

def test_adversarial_loss_reaches_camera_yaw():
    G, post, loss = _gmain(learn_camera=True)
    assert loss.camera_regularizers(300.0) is None # regularizers off: only the adversarial term trains the camera
    # The posterior that rendered the fakes is in the graph (not detached) and its yaw column gets a gradient.
    assert post is not None and post.requires_grad and post.grad is not None
    assert post.grad[:, 0].abs().min() > 0, post.grad[:, 0]
    # ... and so do the origin adaptor's yaw-producing weights (row 0 of its last layer = yaw logit).
    fc1 = G.camera_generator.origin_adaptor.fc1
    assert fc1.weight.grad is not None and fc1.weight.grad[0].abs().sum() > 0
    assert fc1.bias.grad[0].abs() > 0
    assert G.camera_generator.origin_adaptor.project_params.weight.grad.abs().sum() > 0

def test_prior_cameras_give_no_camera_gradient():
    # Negative control: with learn_camera off the camera generator is bypassed and gets no gradient.
    G, post, _ = _gmain(learn_camera=False)
    assert post is None
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in G.camera_generator.parameters())

def test_camera_generator_is_trained_by_G_optimizer_at_lr_times_0p1():
    from training.phases import setup_phases
    G = tiny_G(c_dim=3)
    _, opts = setup_phases([('G', G, dict(class_name='torch.optim.Adam', lr=0.0025, betas=[0, 0.99]), None)])
    in_opt = {id(p) for group in opts['G'].param_groups for p in group['params']}
    cam_params = list(G.camera_generator.parameters())
    assert cam_params and all(id(p) in in_opt for p in cam_params)
    # Equalized lr: Adam's step on the stored weight is lr, the effective weight moves by lr * weight_gain * sqrt(in).
    for name, m in G.camera_generator.named_modules():
        if hasattr(m, 'weight_gain') and hasattr(m, 'bias_gain'):
            assert m.bias_gain == 0.1 and math.isclose(m.weight_gain * math.sqrt(m.weight.shape[1]), 0.1), name

def test_camera_regularizer_schedules_match_spec():
    G, D = tiny_G(c_dim=3), tiny_D(c_dim=3)
    loss = Loss3DGP('cpu', G, D, kd_weight=0)
    assert loss.cam.force_mean_weight == 10.0 and loss.cam.emd_anneal_kimg == 10000
    assert loss.cam.emd_weights == dict(origin=2.0, radius=0.0, fov=1e-4, look_at=1e-4)
    # At t = 0 EMD is skipped, so only mean forcing contributes: 10 * ||mean angles - prior mean||.
    torch.manual_seed(1)
    total = loss.camera_regularizers(0.0)
    torch.manual_seed(1)
    prior = G.camera_prior.sample(loss.cam.force_mean_num_samples)
    z = torch.randn([prior.shape[0], G.z_dim])
    c = torch.nn.functional.one_hot(torch.randint(3, [prior.shape[0]]), 3).float()
    post = G.camera_generator(prior, z, c)
    ref = 10.0 * (post[:, :3].mean(0) - G.camera_prior.mean_angles() + 1e-8).norm()
    assert torch.allclose(total, ref, rtol=1e-5)

#----------------------------------------------------------------------------
