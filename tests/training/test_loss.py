"""Tests for training.loss.StyleGAN2Loss: EG3D schedules, gradients vs. closed forms, GPC, blur, R1, real networks."""

import pytest
import torch

import dnnlib
from torch_utils.ops import upfirdn2d
from training.loss import StyleGAN2Loss

#----------------------------------------------------------------------------
# Small stand-ins with the EG3D G/D interface, simple enough for closed-form gradients.

class MockG(torch.nn.Module):
    z_dim, c_dim, num_ws = 4, 25, 3
    def __init__(self, density_reg=0.25, reg_type='l1'):
        super().__init__()
        self.fc = torch.nn.Linear(4 + 25, 3 * 6)
        self.a = torch.nn.Parameter(torch.randn(3))
        self.rendering_kwargs = dict(density_reg=density_reg, reg_type=reg_type, density_reg_p_dist=0.004, box_warp=1)
        self.mapping_c, self.nrr = [], []
    def mapping(self, z, c, update_emas=False):
        self.mapping_c.append(c.detach().clone())
        return self.fc(torch.cat([z, c], dim=1)).reshape(-1, 3, 6)
    def synthesis(self, ws, c, neural_rendering_resolution=None, update_emas=False):
        self.nrr.append(neural_rendering_resolution)
        v = ws.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)
        grid = torch.linspace(-1, 1, 16)
        image = v * grid.reshape(1, 1, 1, 16) + grid.reshape(1, 1, 16, 1) ** 2
        r = neural_rendering_resolution
        return dict(image=image.expand(-1, 3, -1, -1), image_raw=(v * torch.ones(1, 3, r, r)), image_depth=torch.zeros(1, 1, r, r))
    def sample_mixed(self, coords, dirs, ws, update_emas=False):
        return dict(sigma=(coords * self.a).sum(-1, keepdim=True) + ws.mean(dim=(1, 2)).reshape(-1, 1, 1))

class MockD(torch.nn.Module):
    def __init__(self, nrr):
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.randn(3, 16, 16) * 0.1)
        self.w2 = torch.nn.Parameter(torch.randn(3, nrr, nrr) * 0.1)
        self.seen = []
    def forward(self, img, c, update_emas=False):
        self.seen.append({k: v.detach().clone() for k, v in img.items()})
        return (img['image'] * self.w1).sum((1, 2, 3)) + (img['image_raw'] * self.w2).sum((1, 2, 3)) + c.sum(1) * 0.01

def setup(nrr=8, **kw):
    torch.manual_seed(0)
    G, D = MockG().requires_grad_(False), MockD(nrr).requires_grad_(False)  # as the training loop leaves them
    loss = StyleGAN2Loss('cpu', G, D, neural_rendering_resolution_initial=nrr, **kw)
    real = torch.rand(4, 3, 16, 16) * 2 - 1
    c = torch.randn(4, 25)
    z = torch.randn(4, 4)
    return G, D, loss, real, c, z

def run(loss, module, phase, real, c, z, gain=1, cur_nimg=0, **extras):
    module.zero_grad(set_to_none=True)
    module.requires_grad_(True)
    loss.accumulate_gradients(phase, real, c, z, c, gain, cur_nimg, **extras)
    module.requires_grad_(False)

#----------------------------------------------------------------------------

def test_schedules_match_eg3d_formulas():
    _, _, loss, *_ = setup(blur_init_sigma=10, blur_fade_kimg=2, gpc_reg_prob=0.5, gpc_reg_fade_kimg=1,
                           r1_gamma=4, r1_gamma_init=1, r1_gamma_fade_kimg=1)
    assert loss.blur_sigma(0) == 10 and loss.blur_sigma(500) == pytest.approx(7.5) and loss.blur_sigma(5000) == 0
    assert loss.swapping_prob(0) == 1 and loss.swapping_prob(500) == pytest.approx(0.75) and loss.swapping_prob(10**6) == 0.5
    assert loss.r1_gamma_at(0) == 1 and loss.r1_gamma_at(500) == pytest.approx(2.5) and loss.r1_gamma_at(10**6) == 4
    _, _, loss, *_ = setup(nrr=16, neural_rendering_resolution_final=32, neural_rendering_resolution_fade_kimg=1)
    assert [loss.neural_rendering_resolution(n) for n in (0, 250, 500, 10**6)] == [16, 20, 24, 32]
    with pytest.raises(ValueError):
        setup(gpc_reg_prob=1.5)

def test_gmain_gradient_equals_manual_softplus():
    G, D, loss, real, c, z = setup()
    run(loss, G, 'Gmain', real, c, z, gain=3, extra=torch.zeros(4))  # extras are accepted and ignored
    got = {k: p.grad.clone() for k, p in G.named_parameters() if p.grad is not None}
    assert D.w1.grad is None  # only the phase's module is trained
    G.zero_grad(set_to_none=True)
    G.requires_grad_(True)
    out = G.synthesis(G.mapping(z, torch.zeros_like(c)), c, neural_rendering_resolution=8)
    (torch.nn.functional.softplus(-D(out, c)).mean() * 3).backward()
    for k, g in got.items():
        torch.testing.assert_close(g, G.get_parameter(k).grad)
    assert torch.equal(G.mapping_c[0], torch.zeros_like(c))  # no pose conditioning -> zeros

def test_dmain_gradient_equals_manual():
    G, D, loss, real, c, z = setup()
    run(loss, D, 'Dmain', real, c, z, gain=2)
    got = {k: p.grad.clone() for k, p in D.named_parameters()}
    D.zero_grad(set_to_none=True)
    D.requires_grad_(True)
    fake = G.synthesis(G.mapping(z, torch.zeros_like(c)), c, neural_rendering_resolution=8)
    real_raw = torch.nn.functional.interpolate(real, size=(8, 8), mode='bilinear', align_corners=False, antialias=True)
    l = torch.nn.functional.softplus(D(fake, c)).mean() + torch.nn.functional.softplus(-D(dict(image=real, image_raw=real_raw), c)).mean()
    (l * 2).backward()
    for k, g in got.items():
        torch.testing.assert_close(g, D.get_parameter(k).grad)

@pytest.mark.parametrize('dual', [True, False])
def test_r1_closed_form(dual):
    # D is linear in its inputs, so dlogits/dimage = w1, dlogits/dimage_raw = w2 and R1 = |w1|^2 (+ |w2|^2).
    G, D, loss, real, c, z = setup(r1_gamma=3, dual_discrimination=dual)
    run(loss, D, 'Dreg', real, c, z, gain=16)
    torch.testing.assert_close(D.w1.grad, 3 * 16 * D.w1.detach())
    if dual:
        torch.testing.assert_close(D.w2.grad, 3 * 16 * D.w2.detach())
    else:
        assert D.w2.grad is None or D.w2.grad.abs().max() == 0

def test_phases_skipped_without_regularisation():
    G, D, loss, real, c, z = setup(r1_gamma=0)
    run(loss, D, 'Dreg', real, c, z)
    assert all(p.grad is None for p in D.parameters())
    G.rendering_kwargs['density_reg'] = 0
    run(loss, G, 'Greg', real, c, z)
    assert all(p.grad is None for p in G.parameters())

def test_density_reg_l1_matches_manual():
    G, D, loss, real, c, z = setup()
    torch.manual_seed(7)
    run(loss, G, 'Greg', real, c, z, gain=4)
    got = G.a.grad.clone()
    torch.manual_seed(7)  # replay the same random draws: coords, perturbation, directions
    G.zero_grad(set_to_none=True)
    G.requires_grad_(True)
    ws = G.mapping(z, torch.zeros_like(c))
    x0 = torch.rand((4, 1000, 3)) * 2 - 1
    x1 = x0 + torch.randn_like(x0) * 0.004
    s = G.sample_mixed(torch.cat([x0, x1], 1), None, ws)['sigma']
    (torch.nn.functional.l1_loss(s[:, :1000], s[:, 1000:]) * 0.25 * 4).backward()
    torch.testing.assert_close(got, G.a.grad)

def test_monotonic_detach_only_pushes_points_behind():
    G, D, loss, real, c, z = setup()
    G.rendering_kwargs['reg_type'] = 'monotonic-detach'
    run(loss, G, 'Greg', real, c, z)
    assert G.a.grad is not None and torch.isfinite(G.a.grad).all()

def test_pose_conditioning_swap():
    G, D, loss, real, c, z = setup(gpc_reg_prob=0.5, gpc_reg_fade_kimg=1000)
    run(loss, G, 'Gmain', real, c, z, cur_nimg=0)  # swapping probability 1 at the start
    torch.testing.assert_close(G.mapping_c[-1], torch.roll(c, 1, 0))
    loss.gpc_reg_prob = 0.0
    run(loss, G, 'Gmain', real, c, z, cur_nimg=10**7)  # faded to 0: own pose
    torch.testing.assert_close(G.mapping_c[-1], c)

def test_style_mixing_uses_second_mapping():
    G, D, loss, real, c, z = setup(style_mixing_prob=1)
    run(loss, G, 'Gmain', real, c, z)
    assert len(G.mapping_c) == 2 and torch.equal(G.mapping_c[1], c)  # EG3D mixes with the unswapped pose

def test_blur_and_raw_targets_seen_by_D():
    G, D, loss, real, c, z = setup(nrr=8, blur_init_sigma=2, blur_fade_kimg=1)
    run(loss, D, 'Dmain', real, c, z, cur_nimg=0)
    seen_real = D.seen[-1]
    sigma = 2.0
    f = torch.arange(-6, 7, dtype=torch.float32).div(sigma).square().neg().exp2()
    expect = upfirdn2d.filter2d(real, f / f.sum())
    torch.testing.assert_close(seen_real['image'], expect)
    raw = torch.nn.functional.interpolate(real, size=(8, 8), mode='bilinear', align_corners=False, antialias=True)
    torch.testing.assert_close(seen_real['image_raw'], upfirdn2d.filter2d(raw, f / f.sum()))
    assert G.nrr == [8]
    run(loss, D, 'Dmain', real, c, z, cur_nimg=10**6)  # blur faded out
    torch.testing.assert_close(D.seen[-1]['image'], real)

#----------------------------------------------------------------------------

def test_real_eg3d_networks_all_phases():
    from torch_utils import training_stats
    rk = dict(image_resolution=32, disparity_space_sampling=False, clamp_mode='softplus',
              superresolution_module='tests.tiny_sr.TinySuperresolution', c_gen_conditioning_zero=False, gpc_reg_prob=0.5,
              c_scale=1.0, superresolution_noise_mode='none', density_reg=0.25, density_reg_p_dist=0.004, reg_type='l1',
              decoder_lr_mul=1.0, sr_antialias=True, depth_resolution=4, depth_resolution_importance=4, ray_start=2.25,
              ray_end=3.3, box_warp=1)
    torch.manual_seed(0)
    G = dnnlib.util.construct_class_by_name(class_name='training.triplane.TriPlaneGenerator', z_dim=512, w_dim=512, c_dim=25,
        img_resolution=32, img_channels=3, mapping_kwargs=dnnlib.EasyDict(num_layers=1), channel_base=256, channel_max=8,
        fused_modconv_default='inference_only', rendering_kwargs=rk, sr_kwargs=dnnlib.EasyDict()).train().requires_grad_(False)
    D = dnnlib.util.construct_class_by_name(class_name='training.dual_discriminator.DualDiscriminator', c_dim=25,
        img_resolution=32, img_channels=3, channel_base=256, channel_max=8,
        epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=2)).train().requires_grad_(False)
    loss = StyleGAN2Loss('cpu', G, D, r1_gamma=1, blur_init_sigma=10, blur_fade_kimg=1, neural_rendering_resolution_initial=16,
                         gpc_reg_prob=0.5, dual_discrimination=True)
    cam = [1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 2.7, 0, 0, 0, 1, 4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1]
    c = torch.tensor([cam, cam])
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    z = torch.randn(2, 512)
    collector = training_stats.Collector()
    for phase, module in [('Gmain', G), ('Greg', G), ('Dmain', D), ('Dreg', D)]:
        run(loss, module, phase, real, c, z, gain=1)
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), phase
        assert sum(g.abs().sum() for g in grads) > 0, phase
    assert G.neural_rendering_resolution == 16
    collector.update()
    assert {'Loss/G/loss', 'Loss/D/loss', 'Loss/r1_penalty', 'Loss/D/reg', 'Loss/scores/real', 'Loss/signs/fake'} <= set(collector.names())

#----------------------------------------------------------------------------

def test_augment_pipe_sees_image_and_raw_together():
    from training.augment import AugmentPipe
    G, D, loss, real, c, z = setup(nrr=8)
    loss.augment_pipe = AugmentPipe(brightness=1, brightness_std=0.5)  # p = 1: every sample gets its own shift
    torch.manual_seed(1)
    run(loss, D, 'Dmain', real, c, z)
    seen = D.seen[-1]
    assert seen['image'].shape == (4, 3, 16, 16) and seen['image_raw'].shape == (4, 3, 8, 8)
    shift = (seen['image'] - real).mean(dim=(1, 2, 3))
    assert shift.abs().min() > 1e-4 and torch.allclose(seen['image'] - real, shift.reshape(4, 1, 1, 1), atol=1e-5)
    raw = torch.nn.functional.interpolate(real, size=(8, 8), mode='bilinear', align_corners=False, antialias=True)
    raw_shift = (seen['image_raw'] - raw).mean(dim=(1, 2, 3))
    torch.testing.assert_close(raw_shift, shift, atol=1e-3, rtol=0)  # same colour transform on both halves
