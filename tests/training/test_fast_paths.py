"""CPU fast paths against the plain paths: channels-last tri-plane gathers, the whole tri-plane G, heap tuning,
sync-free loss sampling, --amp=bf16 and --compile (training/loss.FastNetwork)."""

import functools
import os
import pickle

import pytest
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

#----------------------------------------------------------------------------
# Sync-free sampling in the losses: the same numbers as the host-side code it replaced.

def test_patch_params_equal_the_plain_cpu_draw():
    from eg3d_ext.loss_3dgp import sample_patch_params
    torch.manual_seed(5)
    got = sample_patch_params(10, beta=0.3, min_scale=0.25, alpha=1.0, group_size=4)
    torch.manual_seed(5)
    u = torch.distributions.Beta(torch.tensor(1.0), torch.tensor(0.3)).sample([3]) # previous code: CPU draw, then .to()
    s = 0.25 + 0.75 * u.clamp(0, 1)
    o = torch.rand([3, 2]) * (1 - s[:, None])
    assert torch.equal(got, torch.cat([s[:, None], o], dim=1).repeat_interleave(4, dim=0)[:10])

def test_style_mixing_mask_equals_eg3d_slice_assignment():
    from tests.training.test_loss import setup
    G, _D, loss, _real, c, z = setup(style_mixing_prob=0.5)
    for seed in range(6):
        torch.manual_seed(seed)
        got = loss._mapping(z, c, torch.zeros_like(c))
        torch.manual_seed(seed) # EG3D: ws[:, cutoff:] = mapping(...)[:, cutoff:] with a tensor cutoff
        ws = G.mapping(z, torch.zeros_like(c))
        cutoff = torch.empty([], dtype=torch.int64).random_(1, ws.shape[1])
        cutoff = torch.where(torch.rand([]) < 0.5, cutoff, torch.full_like(cutoff, ws.shape[1]))
        ws[:, cutoff:] = G.mapping(torch.randn_like(z), c)[:, cutoff:]
        assert torch.equal(got, ws)

#----------------------------------------------------------------------------
# --amp=bf16: one accumulate step of the 3DGP loss with real (tiny) networks.

def _loss_3dgp_grads(amp):
    from eg3d_ext.loss_3dgp import Loss3DGP
    from tests.eg3d_ext._tiny import tiny_D, tiny_G
    torch.manual_seed(0)
    G, D = tiny_G().requires_grad_(False), tiny_D().requires_grad_(False)
    loss = Loss3DGP('cpu', G, D, kd_weight=0, blur_init_sigma=1, blur_fade_kimg=100)
    loss.enable_fast_paths(amp=amp)
    real, depth = torch.rand(4, 3, 16, 16) * 2 - 1, torch.rand(4, 1, 16, 16)
    c, z = torch.eye(3)[torch.arange(4) % 3], torch.randn(4, 16)
    grads = []
    for phase, module in [('Gmain', G), ('Dmain', D)]:
        module.requires_grad_(True)
        torch.manual_seed(1) # same patches, camera samples and noise on both paths
        loss.accumulate_gradients(phase, real, c, z, c, 1, 1000, depth=depth)
        module.requires_grad_(False)
        grads.append(torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None]))
    return grads, (G, D)

def test_amp_bf16_loss_step_matches_plain():
    """bf16 keeps ~3 significant digits: gradients agree to 15% (L2, relative) and point the same way (cos > 0.99);
    measured 7% / 0.997 for this config. The networks themselves are left in float32."""
    plain, _ = _loss_3dgp_grads(None)
    amp, (G, D) = _loss_3dgp_grads('bf16')
    for a, b in zip(amp, plain):
        assert a.dtype == torch.float32 and a.shape == b.shape and bool(torch.isfinite(a).all())
        assert float((a - b).norm() / b.norm()) < 0.15
        assert float(torch.nn.functional.cosine_similarity(a, b, dim=0)) > 0.99
        assert not torch.equal(a, b) # autocast really ran
    assert all(p.dtype == torch.float32 for p in list(G.parameters()) + list(D.parameters()))

def test_fast_paths_off_leave_the_loss_untouched():
    from tests.training.test_loss import setup
    G, D, loss, *_ = setup()
    loss.enable_fast_paths()
    assert loss.G is G and loss.D is D
    with pytest.raises(ValueError):
        loss.enable_fast_paths(amp='fp8')

#----------------------------------------------------------------------------
# --compile.

@pytest.mark.slow # a cold inductor cache takes ~60 s on 2 cores (~13 s warm)
def test_compiled_mapping_matches_plain():
    from training.loss import FastNetwork
    from training.networks_stylegan2 import MappingNetwork
    torch.manual_seed(0)
    M = MappingNetwork(z_dim=8, c_dim=3, w_dim=8, num_ws=3, num_layers=2).requires_grad_(False)
    z, c = torch.randn(4, 8), torch.eye(3)[[0, 1, 2, 0]]
    view = FastNetwork(M, use_compile=True)
    out = view(z, c)
    assert isinstance(view._calls['__call__'], torch._dynamo.eval_frame.OptimizedModule)
    assert torch.allclose(out, M(z, c), rtol=1e-5, atol=1e-6)
    view.w_avg_beta = 0.5 # attribute writes reach the plain module
    assert M.w_avg_beta == 0.5

@pytest.mark.slow # in-process training run, dynamo tracing of G and D
def test_compiled_training_snapshot_holds_plain_modules(tmp_path, monkeypatch):
    """A --compile run writes a snapshot that legacy.load_network_pkl reads back with no compiled wrapper inside.
    Dynamo traces for real; the eager backend skips inductor's code generation, which does not affect pickling."""
    import legacy
    from tests.eg3d_ext.test_presets import TINY_EG3D, dry_run
    from training import training_loop
    from training.loss import FastNetwork
    monkeypatch.setattr(torch, 'compile', functools.partial(torch.compile, backend='eager'))
    seen = []
    plain_init = FastNetwork.__init__
    def recording_init(self, module, *args, **kwargs):
        seen.append(module)
        plain_init(self, module, *args, **kwargs)
    monkeypatch.setattr(FastNetwork, '__init__', recording_init)
    data = _cam_zip(tmp_path)
    args = ['--cfg=ffhq', '--data', data, '--batch=2', '--mbstd-group=2', '--kimg=0.002', '--tick=0.002', '--snap=1',
            '--metrics=none', '--workers=1', '--grid=2x2', '--compile'] + TINY_EG3D
    c, _ = dry_run(args, tmp_path)
    assert c['torch_compile'] is True
    c['run_dir'] = str(tmp_path / 'run')
    c['data_loader_kwargs']['num_workers'] = 0
    os.makedirs(c['run_dir'])
    training_loop.training_loop(rank=0, device=torch.device('cpu'), **c)
    assert len(seen) == 2 # G and D went through torch.compile
    with open(os.path.join(c['run_dir'], 'network-snapshot-000000.pkl'), 'rb') as f:
        data = legacy.load_network_pkl(f)
    for name in ('G', 'D', 'G_ema'):
        modules = list(data[name].modules())
        assert not any(isinstance(m, torch._dynamo.eval_frame.OptimizedModule) for m in modules), name
        assert not any('_compiled_call_impl' in vars(m) for m in modules), name
    pickle.dumps(data['G_ema']) # plain modules pickle again

def _cam_zip(tmp_path):
    import numpy as np
    from tests.test_train import FRONTAL
    from tests.training.test_dataset import make_zip
    rnd = np.random.RandomState(0)
    path = str(tmp_path / 'cam32.zip')
    make_zip(path, [rnd.randint(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)],
             [[float(v) + 0.01 * i for v in FRONTAL] for i in range(4)])
    return path

#----------------------------------------------------------------------------
