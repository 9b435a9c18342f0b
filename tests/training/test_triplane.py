"""Tests for training.triplane: TriPlaneGenerator forward/gradients/pickling and the OSGDecoder interface."""

import ast
import io
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

import camera_utils
from torch_utils import persistence
from training.triplane import OSGDecoder, TriPlaneGenerator

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#----------------------------------------------------------------------------

def _rendering_kwargs(**overrides):
    rk = dict(image_resolution=128, disparity_space_sampling=False, clamp_mode='softplus',
        superresolution_module='training.superresolution.SuperresolutionHybrid2X', c_gen_conditioning_zero=False,
        gpc_reg_prob=0.5, c_scale=1.0, superresolution_noise_mode='none', density_reg=0.25,
        density_reg_p_dist=0.004, reg_type='l1', decoder_lr_mul=1.0, sr_antialias=True, depth_resolution=8,
        depth_resolution_importance=8, ray_start=2.25, ray_end=3.3, box_warp=1.6, avg_camera_radius=2.7,
        avg_camera_pivot=[0, 0, 0])
    rk.update(overrides)
    return rk

def _tiny_G(seed=0, **rk_overrides):
    torch.manual_seed(seed)
    return TriPlaneGenerator(z_dim=16, c_dim=25, w_dim=512, img_resolution=128, img_channels=3, sr_num_fp16_res=4,
        mapping_kwargs=dict(num_layers=2), rendering_kwargs=_rendering_kwargs(**rk_overrides),
        sr_kwargs=dict(channel_base=1024, channel_max=32, fused_modconv_default='inference_only'),
        channel_base=1024, channel_max=32, fused_modconv_default='inference_only', num_fp16_res=0, conv_clamp=None)

def _cameras(n, yaw=0.0):
    c2w = camera_utils.LookAtPoseSampler.sample(np.pi / 2 + yaw, np.pi / 2, torch.zeros(3), radius=2.7,
        batch_size=n)
    K = camera_utils.FOV_to_intrinsics(18.837).reshape(1, 9).repeat(n, 1)
    return torch.cat([c2w.reshape(n, 16), K], dim=1)

@pytest.fixture(scope='module')
def G():
    return _tiny_G()

#----------------------------------------------------------------------------

def test_layout_matches_eg3d(G):
    assert [name for name, _ in G.named_children()] == ['renderer', 'ray_sampler', 'backbone', 'superresolution',
        'decoder']
    assert G.backbone.img_resolution == 256 and G.backbone.img_channels == 96 and G.neural_rendering_resolution == 64
    assert G.backbone.synthesis.num_ws == 14 and G._last_planes is None
    assert set(G.init_kwargs) == {'z_dim', 'c_dim', 'w_dim', 'img_resolution', 'img_channels', 'sr_num_fp16_res',
        'mapping_kwargs', 'rendering_kwargs', 'sr_kwargs', 'channel_base', 'channel_max', 'fused_modconv_default',
        'num_fp16_res', 'conv_clamp'}
    # The renderer, ray sampler and decoder are plain modules pickled by reference (spec a.3).
    for child in [G.renderer, G.ray_sampler, G.decoder]:
        assert not persistence.is_persistent(child)
    assert G.decoder.hidden_dim == 64 and isinstance(G.decoder.net[1], torch.nn.Softplus)
    sd = G.state_dict()
    assert sd['decoder.net.0.weight'].shape == (64, 32) and sd['decoder.net.2.weight'].shape == (33, 64)
    assert sd['backbone.mapping.embed.weight'].shape == (512, 25)

def test_forward_shapes_and_resolution_memory(G):
    c = _cameras(2)
    with torch.no_grad():
        out = G(torch.randn(2, 16), c, neural_rendering_resolution=16, noise_mode='const')
    assert out['image'].shape == (2, 3, 128, 128)
    assert out['image_raw'].shape == (2, 3, 16, 16) and out['image_depth'].shape == (2, 1, 16, 16)
    assert G.neural_rendering_resolution == 16 # EG3D stores the last resolution passed in
    depth = out['image_depth']
    assert torch.isfinite(depth).all() and depth.min() >= 2.25 - 1e-4 and depth.max() <= 3.3 + (3.3 - 2.25) / 7
    for v in out.values():
        assert torch.isfinite(v).all()

def test_gradients_reach_every_parameter():
    G = _tiny_G()
    out = G(torch.randn(1, 16), _cameras(1), neural_rendering_resolution=16)
    (out['image'].square().mean() + out['image_raw'].square().mean() + out['image_depth'].mean()).backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    # The SR runs with superresolution_noise_mode='none', so only its noise strengths get no gradient.
    assert missing and all(n.startswith('superresolution.') and n.endswith('noise_strength') for n in missing)
    assert G.decoder.net[0].weight.grad.abs().sum() > 0 and G.backbone.mapping.fc0.weight.grad.abs().sum() > 0

def test_mapping_conditioning_scale_and_zero():
    G = _tiny_G(c_scale=0.0)
    z = torch.randn(2, 16)
    with torch.no_grad():
        assert torch.equal(G.mapping(z, _cameras(2)), G.mapping(z, _cameras(2, yaw=0.5)))
        G.rendering_kwargs['c_scale'] = 1.0
        assert not torch.equal(G.mapping(z, _cameras(2)), G.mapping(z, _cameras(2, yaw=0.5)))
        G.rendering_kwargs['c_gen_conditioning_zero'] = True
        assert torch.equal(G.mapping(z, _cameras(2)), G.mapping(z, _cameras(2, yaw=0.5)))

def test_sample_returns_raw_decoder_output_and_cache(G):
    z, c = torch.randn(1, 16), _cameras(1)
    coords = torch.rand(1, 50, 3) - 0.5
    with torch.no_grad():
        out = G.sample(coords, torch.zeros_like(coords), z, c)
        assert out['rgb'].shape == (1, 50, 32) and out['sigma'].shape == (1, 50, 1)
        assert out['rgb'].min() >= -0.001 and out['rgb'].max() <= 1.001
        ws = G.mapping(z, c)
        torch.testing.assert_close(G.sample_mixed(coords, torch.zeros_like(coords), ws)['sigma'], out['sigma'])
        torch.manual_seed(5)
        a = G.synthesis(ws, c, neural_rendering_resolution=16, cache_backbone=True, noise_mode='const')
        assert G._last_planes is not None
        torch.manual_seed(5)
        b = G.synthesis(ws * 0, c, neural_rendering_resolution=16, use_cached_backbone=True, noise_mode='const')
        torch.testing.assert_close(a['image_raw'], b['image_raw']) # planes came from the cache
    G._last_planes = None

def test_image_raw_aliasing_quirk_at_sr_input_resolution():
    """2X at r=64: image_raw = rendered rgb + block0's ToRGB residual, added in place (spec g.1)."""
    G = _tiny_G()
    captured = {}
    G.renderer.register_forward_hook(lambda m, i, o: captured.__setitem__('rgb', o[0][..., :3].clone()))
    G.superresolution.block0.torgb.register_forward_hook(lambda m, i, o: captured.__setitem__('res', o.clone()))
    with torch.no_grad():
        out = G(torch.randn(1, 16), _cameras(1), neural_rendering_resolution=64, noise_mode='const')
    rendered = captured['rgb'].permute(0, 2, 1).reshape(1, 3, 64, 64)
    torch.testing.assert_close(out['image_raw'], rendered + captured['res'])
    assert captured['res'].abs().max() > 0

#----------------------------------------------------------------------------

_CHILD = r'''
import pickle, sys, torch
with open(sys.argv[1], 'rb') as f:
    G, z, c, ref = pickle.load(f)
torch.manual_seed(7)
with torch.no_grad():
    out = G(z, c, neural_rendering_resolution=16, noise_mode='const')
for k in ref:
    assert torch.equal(out[k], ref[k]), k
print('OK', type(G).__module__)
'''

def test_pickle_roundtrip_in_fresh_process(tmp_path):
    G = _tiny_G(seed=3)
    z, c = torch.randn(1, 16), _cameras(1, yaw=0.3)
    torch.manual_seed(7)
    with torch.no_grad():
        ref = G(z, c, neural_rendering_resolution=16, noise_mode='const')
    path = tmp_path / 'G.pkl'
    with open(path, 'wb') as f:
        pickle.dump((G, z, c, ref), f)
    env = dict(os.environ, PYTHONPATH=_ROOT, OMP_NUM_THREADS=str(torch.get_num_threads())) # same reduction order as the parent
    res = subprocess.run([sys.executable, '-c', _CHILD, str(path)], cwd=str(tmp_path), env=env, capture_output=True,
        text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith('OK')

def test_pickle_references_only_eg3d_globals(G):
    """The classes a pickle names must exist in official EG3D; gains are Python floats, so no numpy scalars."""
    seen = set()
    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            seen.add(f'{module}.{name}')
            return super().find_class(module, name)
    Recorder(io.BytesIO(pickle.dumps(G))).load()
    allowed = {'torch_utils.persistence._reconstruct_persistent_obj', 'training.triplane.OSGDecoder',
        'training.volumetric_rendering.renderer.ImportanceRenderer',
        'training.volumetric_rendering.ray_marcher.MipRayMarcher2',
        'training.volumetric_rendering.ray_sampler.RaySampler', 'torch.nn.modules.container.Sequential',
        'torch.nn.modules.activation.Softplus', 'dnnlib.util.EasyDict', 'collections.OrderedDict',
        'torch._utils._rebuild_tensor_v2', 'torch._utils._rebuild_parameter', 'torch.storage._load_from_bytes'}
    assert seen <= allowed, seen - allowed
    assert 'training.triplane.OSGDecoder' in seen

def test_persistent_sources_import_only_eg3d_names():
    """Our pickled sources are exec'd by official EG3D too, so they may import only modules EG3D has (spec a.2)."""
    allowed = {'numpy', 'torch', 'dnnlib', 'scipy.signal', 'scipy.optimize', 'scipy.special', 'torch_utils',
        'torch_utils.ops', 'training.networks_stylegan2', 'training.networks_stylegan3',
        'training.volumetric_rendering.renderer', 'training.volumetric_rendering.ray_sampler'}
    for name in ['networks_stylegan2', 'networks_stylegan3', 'triplane', 'superresolution', 'dual_discriminator']:
        with open(os.path.join(_ROOT, 'training', f'{name}.py')) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) else []
            for mod in mods:
                assert mod in allowed, f'{name}.py imports {mod}'

def test_osg_decoder_formula_and_restore_without_init():
    torch.manual_seed(0)
    dec = OSGDecoder(32, {'decoder_lr_mul': 0.5, 'decoder_output_dim': 32})
    with torch.no_grad():
        dec.net[2].bias.normal_()
    feats = torch.randn(2, 3, 7, 32)
    out = dec(feats, None)
    x = feats.mean(1).reshape(14, 32)
    h = torch.nn.functional.softplus(x @ (dec.net[0].weight * 0.5 / np.sqrt(32)).t() + dec.net[0].bias * 0.5)
    y = (h @ (dec.net[2].weight * 0.5 / 8).t() + dec.net[2].bias * 0.5).reshape(2, 7, 33)
    torch.testing.assert_close(out['sigma'], y[..., :1])
    torch.testing.assert_close(out['rgb'], torch.sigmoid(y[..., 1:]) * 1.002 - 0.001)
    dec2 = pickle.loads(pickle.dumps(dec)) # restored from state only (no __init__)
    torch.testing.assert_close(dec2(feats, None)['rgb'], out['rgb'])

#----------------------------------------------------------------------------
