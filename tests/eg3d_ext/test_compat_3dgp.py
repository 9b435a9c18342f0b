"""Loading 3DGP-style pickles: `src.*` aliases, the non-persistent bare `training.networks_discriminator.Discriminator`,
omegaconf configs without omegaconf, TensorGroup, CUDA storages on a CPU host, and the plain helper functions."""

import io
import math
import os
import pickle
import subprocess
import sys

import pytest
import torch

import dnnlib
from eg3d_ext import camera, compat
from eg3d_ext.compat import omegaconf as oc
from eg3d_ext.compat.dnnlib import TensorGroup
from eg3d_ext.compat.rendering_utils import compute_cam2world_matrix, sample_camera_params, sample_rays
from eg3d_ext.compat.training_utils import linear_schedule, run_batchwise
from eg3d_ext.generator import rays_from_c25

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
assert compat.install()

# Reference-style generators, written for these tests against the interfaces of 3DGP / EpiGRAF (3dgp-reference.md
# 1.1, 1.9, 2.4; eg3d-compatibility.md a.7): their embedded source imports exactly the `src.*` / omegaconf names of
# 3DGP's and calls the plain helpers the way 3DGP's code does. Rendering draws random ray samples and noise, so
# comparisons seed torch.
REF_SRC = """
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from src.torch_utils import misc
from src.torch_utils import persistence
from src.torch_utils.ops import bias_act, conv2d_resample, fma, upfirdn2d
from src.dnnlib import EasyDict, TensorGroup
from src.dnnlib.util import EasyDict as EasyDict2
from src.training.layers import FullyConnectedLayer, MappingNetwork, Conv2dLayer, ScalarEncoder1d, normalize_2nd_moment
from src.training.rendering_utils import compute_cam2world_matrix, normalize, sample_camera_params
from src.training.training_utils import linear_schedule, run_batchwise, extract_patches
from src.training.tri_plane_renderer import sample_rays, ImportanceRenderer, simple_tri_plane_renderer
from src.training.networks_stylegan2 import SynthesisBlock
from src.training.networks_camera_adaptor import CameraAdaptor as _Unused1
from src.training.networks_depth_adaptor import DepthAdaptor as _Unused2

@persistence.persistent_class
class Mapping(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, num_ws):
        super().__init__()
        self.num_ws = num_ws
        self.fc = FullyConnectedLayer(z_dim + c_dim, w_dim, activation='lrelu')
        self.register_buffer('w_avg', torch.randn(w_dim))
    def forward(self, z, c, camera_angles=None, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        ws = self.fc(normalize_2nd_moment(torch.cat([z, c], dim=1))).unsqueeze(1).repeat(1, self.num_ws, 1)
        return self.w_avg.lerp(ws, truncation_psi)

@persistence.persistent_class
class TriPlanes(torch.nn.Module):
    def __init__(self, w_dim, feat_dim):
        super().__init__()
        self.const = torch.nn.Parameter(torch.randn(3, feat_dim, 8, 8))
        self.affine = FullyConnectedLayer(w_dim, feat_dim, bias_init=1)
    def forward(self, ws, noise_mode='random', update_emas=False):
        planes = self.const[None] * self.affine(ws[:, 0])[:, None, :, None, None]
        return planes + 0.1 * torch.randn_like(planes) if noise_mode == 'random' else planes

@persistence.persistent_class
class TriPlaneMLP(torch.nn.Module):
    def __init__(self, feat_dim):
        super().__init__()
        self.fc = FullyConnectedLayer(feat_dim, 4)
    def forward(self, x):
        out = self.fc(x.mean(dim=1).flatten(0, 1)).reshape(x.shape[0], x.shape[2], 4)
        return {'rgb': out[..., :3], 'sigma': out[..., 3:]}

@persistence.persistent_class
class CameraAdaptor(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.fc = FullyConnectedLayer(8 + cfg.z_dim + cfg.c_dim, 3)
    def sample_from_prior(self, *args, **kwargs):
        return sample_camera_params(self.cfg.camera, *args, **kwargs)
    def forward(self, cp, z, c=None):
        x = torch.cat([cp.angles, cp.fov[:, None], cp.radius[:, None], cp.look_at, z, c], dim=1)
        s = self.fc(x).sigmoid()
        a, f = self.cfg.camera.origin.angles, self.cfg.camera.fov
        yaw = a.yaw.min + s[:, 0] * (a.yaw.max - a.yaw.min)
        pitch = a.pitch.min + s[:, 1] * (a.pitch.max - a.pitch.min)
        return TensorGroup(angles=torch.stack([yaw, pitch, torch.zeros_like(yaw)], dim=1), fov=f.min + s[:, 2] * (f.max - f.min),
                           radius=cp.radius, look_at=cp.look_at)

@persistence.persistent_class
class DepthAdaptor(torch.nn.Module):
    def __init__(self, near, far):
        super().__init__()
        self.near, self.far = near, far
        self.gain = torch.nn.Parameter(torch.tensor(1.5))
    def forward(self, depth, w):
        return (self.gain * (2 * depth - self.near - self.far) / (self.far - self.near)).tanh()

def render(planes, mlp, ray_o, ray_d, num_steps, near, far, cube_scale, cut_quantile=0.0):
    B, R = ray_o.shape[:2]
    steps = torch.arange(num_steps, device=ray_o.device) + torch.rand(B, R, num_steps, device=ray_o.device)
    t = near + (far - near) * steps / num_steps
    pts = (ray_o[:, :, None] + t[..., None] * ray_d[:, :, None]).reshape(B, -1, 3)
    out = run_batchwise(simple_tri_plane_renderer, data=dict(coords=pts), batch_size=R * num_steps // 2 + 1, dim=1,
                        x=planes.flatten(1, 2), mlp=mlp, scale=cube_scale)
    rgb, sigma = out['rgb'].reshape(B, R, num_steps, 3), F.softplus(out['sigma'].reshape(B, R, num_steps))
    if cut_quantile > 0:
        sigma = torch.where(sigma < torch.quantile(sigma, cut_quantile), torch.zeros_like(sigma), sigma)
    delta = torch.cat([t[..., 1:] - t[..., :-1], torch.full_like(t[..., :1], 1e10)], dim=-1)
    alpha = 1 - torch.exp(-sigma * delta)
    weights = alpha * torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1 - alpha + 1e-10], dim=-1), dim=-1)[..., :-1]
    return (weights[..., None] * rgb).sum(dim=2), (weights * t).sum(dim=2)

@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    def __init__(self, cfg, img_resolution):
        super().__init__()
        self.cfg, self.img_resolution, self.test_resolution, self.num_ws = cfg, img_resolution, img_resolution, 3
        self.tri_plane_decoder = TriPlanes(cfg.w_dim, cfg.tri_plane.feat_dim)
        self.tri_plane_mlp = TriPlaneMLP(cfg.tri_plane.feat_dim)
        self.camera_adaptor = CameraAdaptor(cfg.camera_adaptor)
        self.depth_adaptor = DepthAdaptor(cfg.camera.ray.start, cfg.camera.ray.end)
        self._default_render_options = EasyDict(max_batch_res=cfg.max_batch_res, return_depth=False,
            return_depth_adapted=False, concat_depth=False, cut_quantile=0.0)
    @torch.no_grad()
    def compute_densities(self, ws, coords, max_batch_res=32, **block_kwargs):
        planes = self.tri_plane_decoder(ws, **block_kwargs)
        return run_batchwise(simple_tri_plane_renderer, data=dict(coords=coords), batch_size=max_batch_res ** 3, dim=1,
                             x=planes.flatten(1, 2), mlp=self.tri_plane_mlp, scale=self.cfg.camera.cube_scale)['sigma']
    def forward(self, ws, camera_params, patch_params=None, render_opts={}, **block_kwargs):
        opts = EasyDict(**{**self._default_render_options, **render_opts})
        planes = self.tri_plane_decoder(ws, **block_kwargs)
        B, h, cam = ws.shape[0], self.test_resolution, self.cfg.camera
        ray_o, ray_d = sample_rays(compute_cam2world_matrix(camera_params), fov=camera_params.fov, resolution=(h, h),
                                   patch_params=patch_params, device=ws.device)
        rgb, depth = render(planes, self.tri_plane_mlp, ray_o, ray_d, self.cfg.num_ray_steps, cam.ray.start, cam.ray.end,
                            cam.cube_scale, opts.cut_quantile)
        img, depth = rgb.permute(0, 2, 1).reshape(B, 3, h, h), depth.reshape(B, 1, h, h)
        depth_adapted = self.depth_adaptor(depth, ws[:, 0])
        img = torch.cat([img, depth_adapted], dim=1) if opts.concat_depth else img + 0.0 * depth_adapted.max()
        if not (opts.return_depth or opts.return_depth_adapted):
            return img
        out = TensorGroup(img=img)
        if opts.return_depth: out.depth = depth
        if opts.return_depth_adapted: out.depth_adapted = depth_adapted
        return out

@persistence.persistent_class
class Generator(torch.nn.Module):
    def __init__(self, cfg, img_resolution, img_channels=3):
        super().__init__()
        self.cfg, self.z_dim, self.c_dim, self.w_dim = cfg, cfg.z_dim, cfg.c_dim, cfg.w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(cfg, img_resolution)
        self.num_ws = self.synthesis.num_ws
        self.mapping = Mapping(cfg.z_dim, cfg.c_dim, cfg.w_dim, self.num_ws)
    def forward(self, z, c, camera_params, camera_angles_cond=None, truncation_psi=1, truncation_cutoff=None,
                update_emas=False, **synthesis_kwargs):
        ws = self.mapping(z, c, camera_angles=camera_angles_cond, truncation_psi=truncation_psi,
                          truncation_cutoff=truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, camera_params=camera_params, update_emas=update_emas, **synthesis_kwargs)

def epigraf_cam2world(angles, radius):
    # EpiGRAF's orbit camera: origin (r sin(pitch) cos(yaw), r cos(pitch), r sin(pitch) sin(yaw)), looking at 0.
    yaw, pitch = angles[:, 0], angles[:, 1]
    origin = radius * torch.stack([pitch.sin() * yaw.cos(), pitch.cos(), pitch.sin() * yaw.sin()], dim=1)
    forward = -origin / origin.norm(dim=1, keepdim=True)
    left = torch.cross(torch.tensor([0.0, 1.0, 0.0]).expand_as(forward), forward, dim=1)
    left = left / left.norm(dim=1, keepdim=True)
    c2w = torch.eye(4).repeat(len(angles), 1, 1)
    c2w[:, :3, :3] = torch.stack([-left, torch.cross(forward, left, dim=1), -forward], dim=-1)
    c2w[:, :3, 3] = origin
    return c2w

@persistence.persistent_class
class EpigrafSynthesis(torch.nn.Module):
    def __init__(self, cfg, img_resolution):
        super().__init__()
        self.cfg, self.img_resolution, self.test_resolution, self.num_ws = cfg, img_resolution, img_resolution, 3
        self.tri_plane_decoder = TriPlanes(cfg.w_dim, cfg.tri_plane.feat_dim)
        self.tri_plane_mlp = TriPlaneMLP(cfg.tri_plane.feat_dim)
    @torch.no_grad()
    def compute_densities(self, ws, coords, max_batch_res=32, use_bg=False, **block_kwargs):
        planes = self.tri_plane_decoder(ws, **block_kwargs)
        return simple_tri_plane_renderer(planes.flatten(1, 2), coords, self.tri_plane_mlp, self.cfg.dataset.cube_scale)['sigma']
    def forward(self, ws, camera_angles, patch_params=None, max_batch_res=128, return_depth=False, ignore_bg=False,
                bg_only=False, fov=None, **block_kwargs):
        planes = self.tri_plane_decoder(ws, **block_kwargs)
        s, B, h = self.cfg.dataset.sampling, ws.shape[0], self.test_resolution
        fov = s.fov if fov is None else fov
        ray_o, ray_d = sample_rays(epigraf_cam2world(camera_angles, s.radius), fov=fov, resolution=(h, h),
                                   patch_params=patch_params, device=ws.device)
        rgb, depth = render(planes, self.tri_plane_mlp, ray_o, ray_d, self.cfg.num_ray_steps, s.ray_start, s.ray_end,
                            self.cfg.dataset.cube_scale)
        return depth.reshape(B, 1, h, h) if return_depth else rgb.permute(0, 2, 1).reshape(B, 3, h, h)

@persistence.persistent_class
class EpigrafGenerator(torch.nn.Module):
    def __init__(self, cfg, z_dim, c_dim, w_dim, img_resolution, img_channels=3):
        super().__init__()
        self.cfg, self.z_dim, self.c_dim, self.w_dim = cfg, z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = EpigrafSynthesis(cfg, img_resolution)
        self.num_ws = self.synthesis.num_ws
        self.mapping = Mapping(z_dim, c_dim, w_dim, self.num_ws)
    def forward(self, z, c, camera_angles, camera_angles_cond=None, truncation_psi=1, truncation_cutoff=None,
                update_emas=False, **synthesis_kwargs):
        ws = self.mapping(z, c, camera_angles=camera_angles_cond, truncation_psi=truncation_psi,
                          truncation_cutoff=truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, camera_angles=camera_angles, update_emas=update_emas, **synthesis_kwargs)
"""

def _oc(tree, parent=None):
    """An omegaconf-2.0-like DictConfig node tree (stand-in classes, pickled under omegaconf's names)."""
    d = oc.DictConfig()
    d.__dict__.update(_parent=parent, _metadata=oc.ContainerMetadata(), _content={})
    for k, v in tree.items():
        if isinstance(v, dict):
            d.__dict__['_content'][k] = _oc(v, d)
        else:
            n = oc.AnyNode()
            n.__dict__.update(_val=v, _parent=d, _metadata=oc.Metadata())
            d.__dict__['_content'][k] = n
    return d

CAMERA = dict(ray=dict(start=0.75, end=1.25), cube_scale=0.5, fov=dict(dist='uniform', min=10, max=45),
    origin=dict(angles=dict(dist='uniform', yaw=dict(min=-1.57, max=1.57), pitch=dict(min=math.pi / 4, max=3 * math.pi / 4)),
                radius=dict(dist='normal', mean=1.0, std=0.0)),
    look_at=dict(angles=dict(dist='spherical_uniform', yaw=dict(min=-math.pi, max=math.pi), pitch=dict(min=0, max=math.pi)),
                 radius=dict(dist='uniform', min=0, max=0.2)))

def _cfg_3dgp():
    """(G cfg, root): model.generator of a 3DGP experiment config; `camera` and z_dim reach it by interpolation."""
    root = _oc(dict(camera=CAMERA, model=dict(generator=dict(z_dim=8, c_dim=3, w_dim=8, num_ray_steps=6, max_batch_res=128,
        camera='${camera}', tri_plane=dict(feat_dim=4), name='g-${camera.cube_scale}',
        camera_adaptor=dict(camera='${camera}', z_dim='${model.generator.z_dim}', c_dim='${model.generator.c_dim}')))))
    return root['model']['generator'], root

def _cfg_epigraf():
    return _oc(dict(num_ray_steps=6, w_dim=8, tri_plane=dict(feat_dim=4), dataset=dict(cube_scale=0.5,
        sampling=dict(dist='normal', horizontal_mean=math.pi / 2, horizontal_stddev=0.3, vertical_mean=math.pi / 2,
                      vertical_stddev=0.15, fov=18.0, radius=1.0, ray_start=0.75, ray_end=1.25))))

def ref_module():
    from torch_utils import persistence
    return persistence._src_to_module(REF_SRC)

class _CudaBytes:
    """Pickles like a storage saved on a GPU (3DGP's loop keeps modules on the GPU)."""
    def __init__(self, t):
        import torch.serialization as ts
        buf, orig = io.BytesIO(), ts.location_tag
        ts.location_tag = lambda storage: 'cuda:0'
        try:
            torch.save(t, buf, _use_new_zipfile_serialization=False)
        finally:
            ts.location_tag = orig
        self.data = buf.getvalue()
    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.data,))

RENAMES = [(b'ctorch_utils.persistence\n', b'csrc.torch_utils.persistence\n'), (b'cdnnlib.util\nEasyDict\n', b'csrc.dnnlib.util\nEasyDict\n'),
           (b'ceg3d_ext.compat.dnnlib\nTensorGroup\n', b'csrc.dnnlib.util\nTensorGroup\n'),
           (b'ceg3d_ext.compat.omegaconf\nDictConfig\n', b'comegaconf.dictconfig\nDictConfig\n'),
           (b'ceg3d_ext.compat.omegaconf\nContainerMetadata\n', b'comegaconf.base\nContainerMetadata\n'),
           (b'ceg3d_ext.compat.omegaconf\nMetadata\n', b'comegaconf.base\nMetadata\n'),
           (b'ceg3d_ext.compat.omegaconf\nAnyNode\n', b'comegaconf.nodes\nAnyNode\n')]
D_RENAME = (b'ceg3d_ext.compat.discriminator\nDiscriminator\n', b'ctraining.networks_discriminator\nDiscriminator\n')

def _write(path, data, renames):
    blob = pickle.dumps(data, protocol=2)
    for old, new in renames:
        assert old in blob, old
        blob = blob.replace(old, new)
    path.write_bytes(blob)
    return str(path)

def _cam():
    return TensorGroup(angles=torch.tensor([[0.3, 1.4, 0.0], [-0.5, 1.7, 0.0]]), fov=torch.tensor([20.0, 40.0]),
                       radius=torch.ones(2), look_at=torch.tensor([[0.1, 1.0, 0.1], [2.0, 0.5, 0.0]]))

@pytest.fixture(scope='module')
def pkl_3dgp(tmp_path_factory):
    """3DGP snapshot: reference-style G, the non-persistent bare-named D, omegaconf configs, CUDA storages."""
    from eg3d_ext.compat.discriminator import Discriminator as CompatD
    from tests.eg3d_ext._tiny import tiny_D
    torch.manual_seed(0)
    G = ref_module().Generator(_cfg_3dgp()[0], img_resolution=6).eval()
    D_ours = tiny_D(c_dim=3, depth_channels=1)
    D = CompatD() # the state a 3DGP D pickle carries, built from our spec-identical parts
    for name in ['scalar_enc', 'hyper_mod_mapping', 'head_mapping', 'b4'] + [f'b{r}' for r in D_ours.block_resolutions]:
        setattr(D, name, getattr(D_ours, name))
    D.cfg, D.img_resolution, D.img_resolution_log2 = _cfg_3dgp()[1]['model'], 16, 4
    D.block_resolutions, D.img_channels = list(D_ours.block_resolutions), 4
    z, c = torch.randn(2, 8), torch.eye(3)[[0, 2]]
    img, cd = torch.randn(4, 4, 8, 8), torch.eye(3)[[0, 1, 2, 0]]
    pp = dict(scales=torch.full([4, 2], 0.5), offsets=torch.tensor([[0.1, 0.2], [0.0, 0.5], [0.3, 0.3], [0.5, 0.0]]))
    with torch.no_grad():
        torch.manual_seed(1)
        ref_g = G(z, c, camera_params=_cam(), render_opts=dict(return_depth=True))
        pvec = torch.cat([pp['scales'][:, :1], pp['offsets']], dim=1)
        ref_logits, ref_feats = D_ours(img, cd, pvec, predict_feat=True)
    weights = torch.randn(5)
    data = dict(G=G, G_ema=G, D=D, augment_pipe=None, training_set_kwargs=dnnlib.EasyDict(path='x.zip'),
                vis=dict(cameras=_cam()), weights_on_gpu=_CudaBytes(weights))
    path = _write(tmp_path_factory.mktemp('pkl') / 'network-snapshot-3dgp.pkl', data, RENAMES + [D_RENAME])
    refs = os.path.join(os.path.dirname(path), 'refs.pt')
    torch.save(dict(z=z, c=c, cam=dict(_cam()), ref_g=dict(ref_g), img=img, cd=cd, pp=pp, logits=ref_logits,
                    feats=ref_feats, w=weights), refs)
    return path, refs

@pytest.fixture(scope='module')
def pkl_epigraf(tmp_path_factory):
    """EpiGRAF snapshot: reference-style G, a *persistent* D (EpiGRAF's is), everything saved on the CPU."""
    from tests.eg3d_ext._tiny import tiny_D
    torch.manual_seed(0)
    G = ref_module().EpigrafGenerator(_cfg_epigraf(), z_dim=8, c_dim=0, w_dim=8, img_resolution=6).eval()
    D = tiny_D(c_dim=0, depth_channels=0)
    data = dict(G=G, G_ema=G, D=D, augment_pipe=None, training_set_kwargs=None)
    return _write(tmp_path_factory.mktemp('pkl') / 'network-snapshot-epigraf.pkl', data, RENAMES[:1] + RENAMES[3:]), D

def test_3dgp_pickle_loads_in_fresh_process(pkl_3dgp):
    path, refs = pkl_3dgp
    code = f"""
import sys, torch
sys.path.insert(0, {ROOT!r})
assert 'omegaconf' not in sys.modules
from dnnlib import registry
registry.load_plugins(['eg3d_ext.plugin'])
import legacy
from dnnlib.util import EasyDict
with open({path!r}, 'rb') as f:
    data = legacy.load_network_pkl(f)
r = torch.load({refs!r}, weights_only=False)
G, D = data['G'].G, data['D'] # data['G'] is the adapter (eg3d_ext.compat.generator) around 3DGP's module
assert type(D).__module__ == 'eg3d_ext.compat.discriminator', type(D)
assert type(G.cfg) is EasyDict and G.cfg.camera.cube_scale == 0.5 and G.cfg.name == 'g-0.5', G.cfg
assert G.synthesis.camera_adaptor.cfg.z_dim == 8 and G.synthesis.camera_adaptor.cfg.camera.ray.end == 1.25
assert type(D.cfg) is EasyDict and D.cfg.generator.num_ray_steps == 6
cam = data['vis']['cameras']
assert type(cam).__name__ == 'TensorGroup' and len(cam) == 2 and cam[1:].fov.tolist() == [40.0]
with torch.no_grad():
    torch.manual_seed(1)
    out = G(r['z'], r['c'], camera_params=cam, render_opts=dict(return_depth=True))
    for key in ('img', 'depth'):
        torch.testing.assert_close(out[key], r['ref_g'][key], rtol=1e-5, atol=1e-6)
    logits, feats = D(r['img'], r['cd'], patch_params=r['pp'], camera_angles=None, predict_feat=True)
    torch.testing.assert_close(logits, r['logits'].reshape(-1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(feats, r['feats'], rtol=1e-5, atol=1e-6)
    assert D(r['img'], r['cd'], patch_params=r['pp'])[1] is None
w = data['weights_on_gpu']
assert w.device.type == 'cpu' and torch.equal(w, r['w'])
assert 'src.training.tri_plane_renderer' in sys.modules
print('ok')
"""
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    res = subprocess.run([sys.executable, '-c', code], cwd='/', capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0 and 'ok' in res.stdout, res.stdout[-2000:] + res.stderr[-3000:]

#----------------------------------------------------------------------------
# The loaded generators through gen_utils (the path of gen_samples, gen_videos, calc_metrics and the viewer) give
# exactly what calling the reference module directly gives.

def _load(path):
    import legacy
    with open(path, 'rb') as f:
        data = legacy.load_network_pkl(f)
    assert data['G'].G is data['G_ema'].G # one module, as pickled
    return data

def _expected_3dgp(G, z, c, cam, **kwargs):
    return G(z, c, camera_params=cam, render_opts=dict(return_depth=True, return_depth_adapted=True), **kwargs)

def test_3dgp_generation_matches_reference(pkl_3dgp):
    import gen_utils
    G = _load(pkl_3dgp[0])['G_ema']
    ref = G.G
    assert gen_utils.is_3d(G) and gen_utils.learns_camera(G) and G.c_dim == 3 and G.z_dim == 8
    assert gen_utils.depth_range(G) == (0.75, 1.25) and gen_utils.camera_defaults(G).fov == 27.5
    z, c = torch.randn(2, 8), gen_utils.class_labels(G, 2, class_idx=1)
    with torch.no_grad():
        # Sampled cameras (metrics): prior -> 3DGP's camera generator, then G.
        torch.manual_seed(5)
        out = gen_utils.generate(G, z, c)
        torch.manual_seed(5)
        cam = ref.synthesis.camera_adaptor(sample_camera_params(ref.cfg.camera, 2, 'cpu'), z, c)
        exp = _expected_3dgp(ref, z, c, cam)
        assert torch.equal(out['image'], exp['img']) and torch.equal(out['image_depth'], exp['depth'])
        assert torch.equal(out['image_depth_adapted'], exp['depth_adapted'])
        torch.testing.assert_close(out['camera_params'], camera.params_to_c25(torch.cat(
            [cam.angles, cam.fov[:, None], cam.radius[:, None], cam.look_at], dim=1)))
        # Orbit cameras (gen_samples / gen_videos): c25 from lookat_cameras, truncated ws, constant noise. EG3D's
        # LookAtPoseSampler at yaw offset y, pitch offset p puts the camera at 3DGP's yaw -y and polar angle
        # arccos(-2p/pi) (EG3D maps its pitch through arccos(1 - 2v)), at the prior's mean radius, looking at 0.
        ws = gen_utils.mapping(G, z, c, truncation_psi=0.7)
        c25 = gen_utils.lookat_cameras(G, [0.3], [-0.2], fov_deg=30).repeat(2, 1)
        torch.manual_seed(6)
        out = gen_utils.generate(G, z, c, camera=c25, ws=ws, noise_mode='const')
        cam = TensorGroup(angles=torch.tensor([[-0.3, math.acos(0.4 / math.pi), 0.0]] * 2), fov=torch.full([2], 30.0),
                          radius=torch.ones(2), look_at=torch.zeros(2, 3))
        torch.manual_seed(6)
        exp = _expected_3dgp(ref, z, c, cam, truncation_psi=0.7, noise_mode='const')
        assert out['image'].shape == (2, 3, 6, 6) and out['image'].std() > 0
        for ours, theirs in [('image', 'img'), ('image_depth', 'depth'), ('image_depth_adapted', 'depth_adapted')]:
            torch.testing.assert_close(out[ours], exp[theirs], rtol=1e-4, atol=1e-5)
        # The NFS protocol's density cut reaches 3DGP's render options.
        G.rendering_kwargs['cut_quantile'] = 0.5
        torch.manual_seed(6)
        cut = gen_utils.generate(G, z, c, camera=c25, ws=ws, noise_mode='const')['image_depth']
        torch.manual_seed(6)
        exp = ref(z, c, camera_params=cam, truncation_psi=0.7, noise_mode='const', render_opts=dict(return_depth=True, cut_quantile=0.5))
        torch.testing.assert_close(cut, exp['depth'], rtol=1e-4, atol=1e-5)
        assert not torch.allclose(cut, out['image_depth'])
        # Shapes: raw density from 3DGP's compute_densities on the exact lattice over the cube.
        vol, voxel, origin = gen_utils.sample_density_volume(G, ws[:1], 4)
        axis = torch.linspace(-0.5, 0.5, 4)
        pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing='ij'), dim=-1).reshape(1, -1, 3)
        torch.testing.assert_close(torch.from_numpy(vol).reshape(-1), ref.synthesis.compute_densities(ws[:1], pts, noise_mode='const').reshape(-1))
        assert (voxel, origin) == (1 / 3, -0.5)

def test_epigraf_generation_matches_reference(pkl_epigraf):
    import gen_utils
    path, D_ref = pkl_epigraf
    data = _load(path)
    D, G = data['D'], data['G_ema']
    from torch_utils import persistence
    assert type(D).__name__ == 'Discriminator' and persistence.is_persistent(D) and D is not D_ref # from its source
    img = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(D(img, torch.zeros(2, 0)), D_ref(img, torch.zeros(2, 0)))
    ref = G.G
    assert gen_utils.is_3d(G) and gen_utils.learns_camera(G) and G.c_dim == 0 and G.depth_adaptor is None
    assert gen_utils.camera_defaults(G).fov == 18.0 and 'cut_quantile' not in gen_utils.rendering_kwargs(G)
    z = torch.randn(2, 8)
    c = gen_utils.conditioning(G, 2)
    with torch.no_grad():
        # Orbit camera: EG3D's yaw offset y is EpiGRAF's yaw pi/2 - y (EpiGRAF's yaw pi/2 looks from +z); pitch as above.
        c25 = gen_utils.lookat_cameras(G, [0.4], [0.1], fov_deg=15).repeat(2, 1)
        torch.manual_seed(7)
        out = gen_utils.generate(G, z, c, camera=c25, ws=gen_utils.mapping(G, z, c), noise_mode='const')
        angles = torch.tensor([[math.pi / 2 - 0.4, math.acos(-0.2 / math.pi), 0.0]] * 2)
        torch.manual_seed(7)
        exp_img = ref(z, c, camera_angles=angles.clone(), fov=torch.full([2], 15.0), noise_mode='const')
        torch.manual_seed(7) # EpiGRAF renders depth in a second pass; the same samples make it the image's depth
        exp_depth = ref(z, c, camera_angles=angles.clone(), fov=torch.full([2], 15.0), noise_mode='const', return_depth=True)
        torch.testing.assert_close(out['image'], exp_img, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out['image_depth'], exp_depth, rtol=1e-4, atol=1e-5)
        # Sampled cameras come from EpiGRAF's orbit prior and render the same way.
        torch.manual_seed(8)
        out = gen_utils.generate(G, z, c)
        torch.manual_seed(8)
        params = G.camera_prior.sample(2)
        angles = params[:, :3] + torch.tensor([math.pi / 2, 0, 0])
        exp_img = ref(z, c, camera_angles=angles.clone(), fov=params[:, 3])
        assert torch.equal(out['image'], exp_img) and out['image_depth'].shape == (2, 1, 6, 6)
        with pytest.raises(ValueError, match='radius'):
            gen_utils.generate(G, z, c, camera=gen_utils.lookat_cameras(G, [0.0], [0.0], radius=2.0).repeat(2, 1))

@pytest.mark.parametrize('which', ['3dgp', 'epigraf'])
def test_gen_samples_cli_on_reference_pickles(pkl_3dgp, pkl_epigraf, which, tmp_path):
    import PIL.Image
    import numpy as np
    from click.testing import CliRunner
    import gen_samples
    path = pkl_3dgp[0] if which == '3dgp' else pkl_epigraf[0]
    res = CliRunner().invoke(gen_samples.generate_images, ['--network', path, '--seeds', '1', '--outdir', str(tmp_path),
                                                           '--device', 'cpu'], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert PIL.Image.open(tmp_path / 'seed0001.png').size[1] == 6
    assert np.asarray(PIL.Image.open(tmp_path / 'seed0001_depth.png')).shape == (6, 6)

def test_legacy_convert_keeps_the_reference_classes(pkl_3dgp, tmp_path):
    """`legacy.py convert` re-saves what was pickled (no adapter inside, so the file stays loadable by 3DGP's code),
    and refuses .safetensors for classes that exist only as embedded pickle source."""
    import pickle
    from click.testing import CliRunner
    import legacy
    dest = str(tmp_path / 'copy.pkl')
    res = CliRunner().invoke(legacy.main, ['convert', pkl_3dgp[0], dest])
    assert res.exit_code == 0, res.output
    with open(dest, 'rb') as f:
        raw = legacy.load_network_pkl(f, adapt=False)
    assert type(raw['G_ema']).__name__ != 'LegacyGenerator' and 'eg3d_ext.compat' not in pickle.dumps(raw['G_ema']).decode('latin-1')
    assert type(_load(dest)['G_ema']).__name__ == 'LegacyGenerator'
    res = CliRunner().invoke(legacy.main, ['convert', pkl_3dgp[0], str(tmp_path / 'w.safetensors')])
    assert res.exit_code != 0 and 'cannot write' in res.output and not os.path.exists(tmp_path / 'w.safetensors')

def test_cuda_bytes_need_the_cpu_mapping(pkl_3dgp):
    if torch.cuda.is_available():
        pytest.skip('the failure being guarded against needs a CPU-only host')
    with pytest.raises(RuntimeError, match='CUDA'):
        pickle.loads(pickle.dumps(_CudaBytes(torch.ones(2))))

#----------------------------------------------------------------------------
# The plain functions, against independent implementations (eg3d_ext.camera / eg3d_ext.generator).

def test_cam2world_and_rays_match_our_camera_model():
    p = torch.tensor([[0.4, 1.2, 0, 30, 1.0, 0.5, 1.0, 0.15], [-1.2, 2.0, 0, 12, 1.0, -2.0, 0.3, 0.05]], dtype=torch.float64)
    cp = dict(angles=p[:, 0:3], fov=p[:, 3], radius=p[:, 4], look_at=p[:, 5:8])
    c2w = compute_cam2world_matrix(cp)
    opencv = camera.params_to_cam2world_opencv(p)
    torch.testing.assert_close(c2w, opencv @ torch.diag(torch.tensor([1.0, -1, -1, 1], dtype=torch.float64)))
    o, d = sample_rays(c2w, cp['fov'], 5)
    o2, d2 = rays_from_c25(camera.params_to_c25(p), 5)
    torch.testing.assert_close(d, d2) and torch.testing.assert_close(o, o2)
    patch = dict(scales=torch.full([2, 2], 0.5, dtype=torch.float64), offsets=torch.tensor([[0.1, 0.3], [0.5, 0.0]], dtype=torch.float64))
    _, d = sample_rays(c2w, cp['fov'], 4, patch_params=patch)
    pv = torch.cat([patch['scales'][:, :1], patch['offsets']], dim=1)
    torch.testing.assert_close(d, rays_from_c25(camera.params_to_c25(p), 4, pv)[1])

def test_schedules_batchwise_prior_and_tensor_group():
    assert [linear_schedule(t, 1.0, 0.0, 100) for t in (-5, 0, 25, 100, 500)] == [1.0, 1.0, 0.75, 0.0, 0.0]
    assert linear_schedule(3, 1.0, 0.2, 0) == 0.2
    x = torch.randn(10, 3)
    out = run_batchwise(lambda x, k: dict(a=x * k, b=(x.sum(1),)), dict(x=x), batch_size=4, k=2)
    torch.testing.assert_close(out['a'], x * 2) and torch.testing.assert_close(out['b'][0], x.sum(1))
    cfg = dnnlib.EasyDict(origin=dict(angles=dict(dist='uniform', yaw=dict(min=-1.57, max=1.57), pitch=dict(min=math.pi / 4, max=3 * math.pi / 4)),
        radius=dict(dist='normal', mean=1.0, std=0.0)), fov=dict(dist='uniform', min=10, max=45),
        look_at=dict(angles=dict(dist='spherical_uniform', yaw=dict(min=-math.pi, max=math.pi), pitch=dict(min=0, max=math.pi)),
                     radius=dict(dist='uniform', min=0, max=0.2)))
    cfg = dnnlib.EasyDict({k: dnnlib.util.EasyDict(v) for k, v in cfg.items()}) # attribute access one level down
    cfg.origin = dnnlib.EasyDict(angles=dnnlib.EasyDict(cfg.origin['angles'], yaw=dnnlib.EasyDict(min=-1.57, max=1.57),
        pitch=dnnlib.EasyDict(min=math.pi / 4, max=3 * math.pi / 4)), radius=cfg.origin['radius'])
    cfg.look_at = dnnlib.EasyDict(angles=dnnlib.EasyDict(cfg.look_at['angles'], yaw=dnnlib.EasyDict(min=-math.pi, max=math.pi),
        pitch=dnnlib.EasyDict(min=0, max=math.pi)), radius=cfg.look_at['radius'])
    cp = sample_camera_params(cfg, 2000)
    assert len(cp) == 2000 and cp.angles.shape == (2000, 3) and bool((cp.radius == 1).all())
    assert -1.57 <= float(cp.angles[:, 0].min()) and float(cp.angles[:, 0].max()) <= 1.57 and float(cp.fov.min()) >= 10
    assert abs(float(torch.cos(cp.look_at[:, 1]).mean())) < 0.1 # uniform directions on the sphere
    tg = pickle.loads(pickle.dumps(cp[:5]))
    assert type(tg) is TensorGroup and len(tg) == 5 and torch.equal(tg.fov, cp.fov[:5])
    assert len(TensorGroup.cat([tg, tg])) == 10
    with pytest.raises(ValueError, match='batch size'):
        TensorGroup(a=torch.zeros(2), b=torch.zeros(3))

#----------------------------------------------------------------------------
