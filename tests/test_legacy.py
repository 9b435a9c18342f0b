"""Tests for legacy.py: our snapshots reload bit-exactly in a fresh process, clear errors, aliases, safe `info`, CLI."""

import io
import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import legacy
from tests._tiny_generators import eg3d_rendering_kwargs
from torch_utils import persistence
from training.augment import AugmentPipe
from training.snapshots import snapshot_module as _snapshot_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRONTAL = [1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 2.7, 0, 0, 0, 1, 4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1]

def tiny_nets():
    rk = eg3d_rendering_kwargs(depth_resolution=6)
    torch.manual_seed(0)
    G = dnnlib.util.construct_class_by_name(class_name='training.triplane.TriPlaneGenerator', z_dim=512, w_dim=512, c_dim=25,
        img_resolution=128, img_channels=3, mapping_kwargs=dnnlib.EasyDict(num_layers=1), channel_base=256, channel_max=8,
        fused_modconv_default='inference_only', rendering_kwargs=rk, num_fp16_res=0, conv_clamp=None, sr_num_fp16_res=4,
        sr_kwargs=dnnlib.EasyDict(channel_base=256, channel_max=8, fused_modconv_default='inference_only'))
    G.register_buffer('dataset_label_std', torch.rand(25))
    with torch.no_grad():  # move away from the deterministic init so a wrong restore cannot pass by accident
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    G.neural_rendering_resolution = 32
    D = dnnlib.util.construct_class_by_name(class_name='training.dual_discriminator.DualDiscriminator', c_dim=25,
        img_resolution=128, img_channels=3, channel_base=256, channel_max=8, epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=1))
    aug = AugmentPipe(xflip=1, rotate90=1, brightness=1)
    aug.p.fill_(0.25)
    return G, D, aug

@pytest.fixture(scope='module')
def snapshot(tmp_path_factory):
    G, D, aug = tiny_nets()
    G_ema = G  # the loop deep-copies anyway
    data = dict(training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path='x.zip'))
    for name, module in [('G', G), ('D', D), ('G_ema', G_ema), ('augment_pipe', aug)]:
        data[name] = _snapshot_module(module)
    path = str(tmp_path_factory.mktemp('snap') / 'network-snapshot-000000.pkl')
    with dnnlib.util.atomic_write(path, 'wb') as f:
        pickle.dump(data, f)
    return path, data

def reference_outputs(G, D, z, c):
    torch.manual_seed(123)  # the renderer's stratified/importance sampling draws random numbers
    with torch.no_grad():
        out = G(z, c, noise_mode='const')
        logits = D(dict(image=out['image'], image_raw=out['image_raw']), c)
    return dict(out, logits=logits)

#----------------------------------------------------------------------------

def test_snapshot_reproduces_outputs_in_fresh_process(snapshot, tmp_path):
    path, data = snapshot
    z = torch.randn([2, 512], generator=torch.Generator().manual_seed(5))
    c = torch.tensor([FRONTAL, FRONTAL], dtype=torch.float32)
    ref = reference_outputs(data['G_ema'], data['D'], z, c)
    torch.save(dict(z=z, c=c), tmp_path / 'inputs.pt')
    script = f"""
import sys, torch
sys.path.insert(0, {ROOT!r})
import legacy
with open({path!r}, 'rb') as f:
    d = legacy.load_network_pkl(f)
inp = torch.load({str(tmp_path / 'inputs.pt')!r})
torch.manual_seed(123)
with torch.no_grad():
    out = d['G_ema'](inp['z'], inp['c'], noise_mode='const')
    logits = d['D'](dict(image=out['image'], image_raw=out['image_raw']), inp['c'])
torch.save(dict(out, logits=logits, p=d['augment_pipe'].p, nrr=d['G_ema'].neural_rendering_resolution), {str(tmp_path / 'out.pt')!r})
"""
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads())) # same reduction order as the parent
    r = subprocess.run([sys.executable, '-c', script], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    got = torch.load(tmp_path / 'out.pt')
    for k in ('image', 'image_raw', 'image_depth', 'logits'):
        assert torch.equal(got[k], ref[k]), k
    assert float(got['p']) == pytest.approx(0.25) and got['nrr'] == 32

def test_force_fp16_rebuilds_and_keeps_weights(snapshot):
    path, data = snapshot
    with open(path, 'rb') as f:
        d = legacy.load_network_pkl(f, force_fp16=True)
    G = d['G_ema']
    assert G.init_kwargs.num_fp16_res == 4 and G.init_kwargs.conv_clamp == 256
    assert data['G_ema'].init_kwargs.num_fp16_res == 0
    for (k, a), (_, b) in zip(G.backbone.named_parameters(), data['G_ema'].backbone.named_parameters()):
        assert torch.equal(a, b), k

def test_convert_and_info_cli(snapshot, tmp_path):
    path, data = snapshot
    dest = str(tmp_path / 'converted.pkl')
    res = CliRunner().invoke(legacy.main, ['--source', path, '--dest', dest])
    assert res.exit_code == 0, res.output
    with open(dest, 'rb') as f:
        d = legacy.load_network_pkl(f)
    for (k, a), (_, b) in zip(d['G_ema'].named_parameters(), data['G_ema'].named_parameters()):
        assert torch.equal(a, b), k
    res = CliRunner().invoke(legacy.main, ['info', path])
    assert res.exit_code == 0, res.output
    assert 'G: persistent TriPlaneGenerator (version 6)' in res.output
    assert 'augment_pipe: persistent AugmentPipe' in res.output
    assert 'SuperresolutionHybrid2X x' in res.output and 'from training.networks_stylegan3 import' in res.output
    assert 'torch_utils.persistence._reconstruct_persistent_obj' in res.output
    assert 'training.volumetric_rendering.renderer.ImportanceRenderer' in res.output

#----------------------------------------------------------------------------

class _Evil:
    """Reduces to a persistent object whose embedded source would create a file if it were executed."""
    def __init__(self, marker):
        self.marker = marker
    def __reduce__(self):
        src = f'import os\nopen({self.marker!r}, "w").write("ran")\nclass Net:\n    pass\n'
        meta = dict(type='class', version=6, module_src=src, class_name='Net', state=dict(w=torch.zeros(3, 4)))
        return (persistence._reconstruct_persistent_obj, (meta,))

def test_info_never_runs_embedded_code(tmp_path):
    marker = str(tmp_path / 'marker.txt')
    path = str(tmp_path / 'evil.pkl')
    with open(path, 'wb') as f:
        pickle.dump(dict(G=_Evil(marker), gain=np.float64(1.5)), f)
    res = CliRunner().invoke(legacy.main, ['info', path])
    assert res.exit_code == 0, res.output
    assert 'G: persistent Net (version 6)' in res.output and 'imports: import os' in res.output
    assert 'Tensors: 1 (12 elements)' in res.output
    assert not os.path.exists(marker)

def test_truncated_and_non_pickle_files(snapshot, tmp_path):
    path, _ = snapshot
    blob = open(path, 'rb').read()
    (tmp_path / 'trunc.pkl').write_bytes(blob[:len(blob) // 2])
    (tmp_path / 'text.pkl').write_bytes(b'this is not a pickle\n')
    for name in ('trunc.pkl', 'text.pkl'):
        with open(tmp_path / name, 'rb') as f, pytest.raises(IOError, match='not a valid network pickle'):
            legacy.load_network_pkl(f)
    res = CliRunner().invoke(legacy.main, ['info', str(tmp_path / 'trunc.pkl')])
    assert res.exit_code != 0 and 'not a valid pickle' in res.output and 'Traceback' not in res.output
    with open(tmp_path / 'other.pkl', 'wb') as f:
        pickle.dump(dict(G=1), f)
    with open(tmp_path / 'other.pkl', 'rb') as f, pytest.raises(IOError, match="key 'G' is missing or not"):
        legacy.load_network_pkl(f)

def test_missing_module_is_named_and_aliases_apply():
    mod = types.ModuleType('eg3d_gone_module')
    class Thing(dict):
        pass
    Thing.__module__ = mod.__name__
    Thing.__qualname__ = 'Thing'
    mod.Thing = Thing
    sys.modules[mod.__name__] = mod
    try:
        blob = pickle.dumps(dict(G=Thing(a=1)))
    finally:
        del sys.modules[mod.__name__]
    with pytest.raises(IOError, match="needs module 'eg3d_gone_module'"):
        legacy.load_network_pkl(io.BytesIO(blob))

    # The alias hook (used for 3DGP's `src.*` prefixes) redirects a module prefix.
    blob = pickle.dumps(dict(x=dnnlib.EasyDict(a=1))).replace(b'dnnlib.util', b'oldlib.util')
    with pytest.raises(ImportError, match="oldlib"):
        legacy._LegacyUnpickler(io.BytesIO(blob)).load()
    legacy.register_module_alias('oldlib', 'dnnlib')
    try:
        obj = legacy._LegacyUnpickler(io.BytesIO(blob)).load()
    finally:
        legacy.MODULE_ALIASES.pop('oldlib')
    assert type(obj['x']) is dnnlib.util.EasyDict and obj['x'].a == 1

#----------------------------------------------------------------------------

def test_tf_stylegan2_pickle_conversion():
    # Synthetic TF pickle: variables laid out as TF StyleGAN2 names them, made from a known PyTorch generator/discriminator
    # by the inverse weight mapping (transpose, HWIO, flipped up-convs/skips, mod_bias - 1).
    from training import networks_stylegan2 as nets
    torch.manual_seed(3)
    G = nets.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3, channel_base=64, channel_max=8,
                       mapping_kwargs=dnnlib.EasyDict(num_layers=2)).eval()
    D = nets.Discriminator(c_dim=0, img_resolution=8, img_channels=3, channel_base=64, channel_max=8,
                           epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=None)).eval()
    hwio = lambda w: w.permute(2, 3, 1, 0).numpy()
    flip = lambda w: hwio(w)[::-1, ::-1].copy()
    mapping, synthesis, top = [], [], []
    for name, p in G.named_parameters():
        p = p.detach()
        parts = name.split('.')
        if parts[0] == 'mapping':
            mapping.append((f'Dense{parts[1][2:]}/{parts[2]}', p.numpy().T if parts[2] == 'weight' else p.numpy()))
            continue
        res = int(parts[1][1:])
        layer = parts[2]
        tf_layer = {'conv0': 'Conv0_up', 'conv1': 'Conv1' if res > 4 else 'Conv', 'torgb': 'ToRGB', 'skip': 'Skip'}.get(layer)
        key = f'{res}x{res}/' + (tf_layer or 'Const')
        if layer == 'const':
            synthesis.append((f'{key}/const', p.numpy()[None]))
        elif parts[3] == 'affine':
            v = p.numpy().T if parts[4] == 'weight' else p.numpy() - 1
            synthesis.append((f'{key}/mod_{parts[4]}', v))
        elif parts[3] == 'weight':
            synthesis.append((f'{key}/weight', flip(p) if layer in ('conv0', 'skip') else hwio(p)))
        else:
            synthesis.append((f'{key}/{parts[3]}', p.numpy()))
    for name, b in G.named_buffers():
        if name.endswith('noise_const'):
            res, layer = int(name.split('.')[1][1:]), name.split('.')[2]
            idx = int(np.log2(res)) * 2 - 5 + (layer == 'conv1')
            synthesis.append((f'noise{max(idx, 0)}', b.numpy()[None, None]))
    top.append(('dlatent_avg', G.mapping.w_avg.numpy()))
    d_vars = []
    for name, p in D.named_parameters():
        p, parts = p.detach(), name.split('.')
        if parts[0] == 'b4':
            tf = {'conv': '4x4/Conv', 'fc': '4x4/Dense0', 'out': 'Output'}[parts[1]]
            v = hwio(p) if p.ndim == 4 else (p.numpy().T if parts[2] == 'weight' else p.numpy())
        else:
            r = parts[0][1:]
            tf = f'{r}x{r}/' + {'fromrgb': 'FromRGB', 'conv0': 'Conv0', 'conv1': 'Conv1_down', 'skip': 'Skip'}[parts[1]]
            v = hwio(p) if p.ndim == 4 else p.numpy()
        d_vars.append((f'{tf}/{parts[-1]}', v))

    mod = types.ModuleType('dnnlib.tflib.network')
    class Network:
        def __init__(self, kw, variables, components=None):
            self.state = dict(version=4, name='G', static_kwargs=kw, components=components or {}, variables=variables,
                              build_module_src='', build_func_name='')
        def __getstate__(self):
            return self.state
    Network.__module__, Network.__qualname__ = mod.__name__, 'Network'
    mod.Network = Network
    g_kw = dict(latent_size=8, label_size=0, dlatent_size=8, resolution=8, num_channels=3, fmap_base=32, fmap_max=8,
                mapping_layers=2, truncation_psi=0.5)
    tf_G = Network(g_kw, top, dict(mapping=Network({}, mapping), synthesis=Network({}, synthesis)))
    tf_D = Network(dict(resolution=8, num_channels=3, fmap_base=32, fmap_max=8, mbstd_group_size=None, structure='resnet'), d_vars)
    sys.modules[mod.__name__] = mod
    try:
        blob = pickle.dumps((tf_G, tf_D, tf_G))
    finally:
        del sys.modules[mod.__name__]
    data = legacy.load_network_pkl(io.BytesIO(blob))
    for name, ref in (('G', G), ('G_ema', G), ('D', D)):
        got = dict(misc_named(data[name]))
        for k, v in misc_named(ref):
            assert torch.equal(got[k], v), f'{name}.{k}'
    z = torch.randn(2, 8)
    torch.testing.assert_close(data['G_ema'](z, None, noise_mode='const'), G(z, None, noise_mode='const'))

def misc_named(module):
    return list(module.named_parameters()) + list(module.named_buffers())
