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

# A 3DGP-style persistent module: imports exactly the `src.*` / omegaconf names of 3DGP's embedded sources.
G_SRC = '''
import numpy as np
import torch
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
from src.training.networks_camera_adaptor import CameraAdaptor
from src.training.networks_depth_adaptor import DepthAdaptor

@persistence.persistent_class
class Generator(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.planes = torch.nn.Parameter(torch.randn(1, 3, 4, 8, 8))
        self.mlp = FullyConnectedLayer(4, 4)
    def forward(self, z, camera_params):
        ray_d, ray_o = sample_rays(compute_cam2world_matrix(camera_params), camera_params.fov, self.cfg.res)
        t = torch.linspace(self.cfg.ray.start, self.cfg.ray.end, 5)
        pts = (ray_o[:, :, None] + ray_d[:, :, None] * t[None, None, :, None]).reshape(ray_o.shape[0], -1, 3)
        planes = self.planes.repeat(ray_o.shape[0], 1, 1, 1, 1) * linear_schedule(1.0, 1.0, 0.5, 2.0)
        mlp = lambda f: self.mlp(f.reshape(-1, 4)).reshape(f.shape)
        out = run_batchwise(lambda coords: simple_tri_plane_renderer(planes, coords, mlp, scale=self.cfg.cube_scale),
                            dict(coords=pts), batch_size=7, dim=1)
        return normalize_2nd_moment(out.mean(dim=1) + z[:, :4])
'''

def _cfg():
    """An omegaconf-2.0-like config tree (child node with its parent chain and an interpolation)."""
    def node(val, parent):
        n = oc.AnyNode(); n.__dict__.update(_val=val, _parent=parent, _metadata=oc.Metadata()); return n
    def dcfg(parent, **items):
        d = oc.DictConfig(); d.__dict__.update(_parent=parent, _metadata=oc.ContainerMetadata(), _content={})
        for k, v in items.items():
            d.__dict__['_content'][k] = v(d) if callable(v) else node(v, d)
        return d
    root = dcfg(None, camera=lambda p: dcfg(p, cube_scale=0.5), model=lambda p: dcfg(p,
        generator=lambda q: dcfg(q, res=6, cube_scale='${camera.cube_scale}', ray=lambda r: dcfg(r, start=0.75, end=1.25),
                                 name='g-${camera.cube_scale}')))
    return root['model']['generator'], root

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
           (b'ceg3d_ext.compat.omegaconf\nAnyNode\n', b'comegaconf.nodes\nAnyNode\n'),
           (b'ceg3d_ext.compat.discriminator\nDiscriminator\n', b'ctraining.networks_discriminator\nDiscriminator\n')]

@pytest.fixture(scope='module')
def pkl_3dgp(tmp_path_factory):
    from torch_utils import persistence
    from eg3d_ext.compat.discriminator import Discriminator as CompatD
    from tests.eg3d_ext._tiny import tiny_D
    torch.manual_seed(0)
    G = persistence._src_to_module(G_SRC).Generator(_cfg()[0])
    D_ours = tiny_D(c_dim=3, depth_channels=1)
    D = CompatD() # the state a 3DGP D pickle carries, built from our spec-identical parts
    for name in ['scalar_enc', 'hyper_mod_mapping', 'head_mapping', 'b4'] + [f'b{r}' for r in D_ours.block_resolutions]:
        setattr(D, name, getattr(D_ours, name))
    D.cfg, D.img_resolution, D.img_resolution_log2 = _cfg()[1]['model'], 16, 4
    D.block_resolutions, D.img_channels = list(D_ours.block_resolutions), 4
    cam = TensorGroup(angles=torch.tensor([[0.3, 1.4, 0.0], [-0.5, 1.7, 0.0]]), fov=torch.tensor([20.0, 40.0]),
                      radius=torch.ones(2), look_at=torch.tensor([[0.1, 1.0, 0.1], [2.0, 0.5, 0.0]]))
    z = torch.randn(2, 8)
    img, c = torch.randn(4, 4, 8, 8), torch.eye(3)[[0, 1, 2, 0]]
    pp = dict(scales=torch.full([4, 2], 0.5), offsets=torch.tensor([[0.1, 0.2], [0.0, 0.5], [0.3, 0.3], [0.5, 0.0]]))
    with torch.no_grad():
        ref_g = G(z, cam)
        pvec = torch.cat([pp['scales'][:, :1], pp['offsets']], dim=1)
        ref_logits, ref_feats = D_ours(img, c, pvec, predict_feat=True)
    weights = torch.randn(5)
    data = dict(G=G, G_ema=G, D=D, augment_pipe=None, training_set_kwargs=dnnlib.EasyDict(path='x.zip'),
                vis=dict(cameras=cam), weights_on_gpu=_CudaBytes(weights))
    blob = pickle.dumps(data, protocol=2)
    for old, new in RENAMES:
        assert old in blob, old
        blob = blob.replace(old, new)
    path = tmp_path_factory.mktemp('pkl') / 'network-snapshot-3dgp.pkl'
    path.write_bytes(blob)
    refs = path.parent / 'refs.pt'
    torch.save(dict(z=z, cam=dict(cam), ref_g=ref_g, img=img, c=c, pp=pp, logits=ref_logits, feats=ref_feats, w=weights), refs)
    return str(path), str(refs)

def test_3dgp_pickle_loads_in_fresh_process(pkl_3dgp):
    path, refs = pkl_3dgp
    code = f'''
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
G, D = data['G'], data['D']
assert type(D).__module__ == 'eg3d_ext.compat.discriminator', type(D)
assert type(G.cfg) is EasyDict and G.cfg.cube_scale == 0.5 and G.cfg.name == 'g-0.5' and G.cfg.ray.end == 1.25, G.cfg
assert type(D.cfg) is EasyDict and D.cfg.generator.res == 6
cam = data['vis']['cameras']
assert type(cam).__name__ == 'TensorGroup' and len(cam) == 2 and cam[1:].fov.tolist() == [40.0]
with torch.no_grad():
    torch.testing.assert_close(G(r['z'], cam), r['ref_g'], rtol=1e-5, atol=1e-6)
    logits, feats = D(r['img'], r['c'], patch_params=r['pp'], camera_angles=None, predict_feat=True)
    torch.testing.assert_close(logits, r['logits'].reshape(-1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(feats, r['feats'], rtol=1e-5, atol=1e-6)
    assert D(r['img'], r['c'], patch_params=r['pp'])[1] is None
w = data['weights_on_gpu']
assert w.device.type == 'cpu' and torch.equal(w, r['w'])
assert 'src.training.tri_plane_renderer' in sys.modules
print('ok')
'''
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    res = subprocess.run([sys.executable, '-c', code], cwd='/', capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0 and 'ok' in res.stdout, res.stdout[-2000:] + res.stderr[-3000:]

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
    d, o = sample_rays(c2w, cp['fov'], 5)
    o2, d2 = rays_from_c25(camera.params_to_c25(p), 5)
    torch.testing.assert_close(d, d2) and torch.testing.assert_close(o, o2)
    patch = dict(scales=torch.full([2, 2], 0.5, dtype=torch.float64), offsets=torch.tensor([[0.1, 0.3], [0.5, 0.0]], dtype=torch.float64))
    d, _ = sample_rays(c2w, cp['fov'], 4, patch_params=patch)
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
