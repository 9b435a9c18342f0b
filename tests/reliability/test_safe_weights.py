"""Weights-only .safetensors networks: convert a snapshot pickle, load it back without unpickling (same outputs),
refuse classes outside training./eg3d_ext./registered networks, and warn once when a pickle is loaded."""

import copy
import os
import pickle
import sys

import pytest
import torch
from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _tiny  # noqa: E402

import dnnlib  # noqa: E402
import legacy  # noqa: E402
from dnnlib import registry  # noqa: E402

@pytest.fixture(scope='module')
def snapshot_pkl(tmp_path_factory):
    """A snapshot dict like the training loop writes, for the tiny config (tiny SR registered as a 'network')."""
    tmp = tmp_path_factory.mktemp('safe')
    data = _tiny.make_tiny_zip(str(tmp / 'tiny32.zip'))
    c = _tiny.tiny_config(str(tmp / 'runs'), data, '--kimg=1')
    torch.manual_seed(0)
    common = dict(c_dim=25, img_resolution=32, img_channels=3)
    G = dnnlib.util.construct_class_by_name(**c.G_kwargs, **common).eval().requires_grad_(False)
    G.register_buffer('dataset_label_std', torch.rand([25]))
    D = dnnlib.util.construct_class_by_name(**c.D_kwargs, **common).eval().requires_grad_(False)
    G_ema = copy.deepcopy(G)
    with torch.no_grad():
        for p in G_ema.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # differs from G, so that mixing them up would show
    G_ema.neural_rendering_resolution = 16
    path = str(tmp / 'network-snapshot-000000.pkl')
    with open(path, 'wb') as f:
        pickle.dump(dict(training_set_kwargs=dict(c.training_set_kwargs), G=G, D=D, G_ema=G_ema, augment_pipe=None), f)
    return path

@pytest.fixture(autouse=True)
def tiny_sr_allowed():
    registry.register('network', 'test_tiny_sr', 'tests.tiny_sr.TinySuperresolution')
    yield
    registry.unregister('network', 'test_tiny_sr')

def outputs(G):
    z, c = torch.randn([2, G.z_dim], generator=torch.Generator().manual_seed(1)), torch.tensor([_tiny.FRONTAL] * 2)
    torch.manual_seed(2)  # the renderer draws stratified samples
    return G(z, c, noise_mode='const')['image']

def test_convert_and_load_without_unpickling(snapshot_pkl, tmp_path, monkeypatch):
    dest = str(tmp_path / 'net.safetensors')
    res = CliRunner().invoke(legacy.main, ['convert', snapshot_pkl, dest])
    assert res.exit_code == 0, res.output
    with open(snapshot_pkl, 'rb') as f:
        ref = legacy.load_network_pkl(f)
    def no_pickle(*args, **kwargs):
        raise AssertionError('unpickling during a safetensors load')
    monkeypatch.setattr(pickle, 'load', no_pickle)
    monkeypatch.setattr(pickle, 'loads', no_pickle)
    monkeypatch.setattr(pickle, 'Unpickler', no_pickle)
    monkeypatch.setattr(legacy, '_LegacyUnpickler', no_pickle)
    monkeypatch.setattr(torch, 'load', no_pickle)
    data = legacy.load_network(dest)
    assert legacy.canonical_class_name(data['G_ema']) == 'training.triplane.TriPlaneGenerator' and data['augment_pipe'] is None
    assert data['training_set_kwargs'] == ref['training_set_kwargs']
    for key in ('G', 'D', 'G_ema'):
        a, b = ref[key].state_dict(), data[key].state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), key
    assert data['G_ema'].neural_rendering_resolution == 16
    img = outputs(data['G_ema'])
    assert torch.isfinite(img).all() and torch.equal(img, outputs(ref['G_ema']))

def test_refuses_classes_outside_the_allowlist(snapshot_pkl, tmp_path):
    with open(snapshot_pkl, 'rb') as f:
        ref = legacy.load_network_pkl(f)
    dest = str(tmp_path / 'net.safetensors')
    legacy.save_safetensors(ref, dest)
    blob = open(dest, 'rb').read()
    import json, safetensors, safetensors.torch
    tensors = safetensors.torch.load(blob)
    with safetensors.safe_open(dest, 'pt') as f:
        meta = json.loads(f.metadata()['eg3d'])
    def tampered(edit):
        m = json.loads(json.dumps(meta))
        edit(m['networks']['G_ema'])
        path = str(tmp_path / 'evil.safetensors')
        with open(path, 'wb') as f:
            f.write(safetensors.torch.save(tensors, metadata={'eg3d': json.dumps(m)}))
        return path
    with pytest.raises(IOError, match="class 'os.system' is not allowed"):
        legacy.load_network(tampered(lambda n: n.update(class_name='os.system')))
    with pytest.raises(IOError, match="class 'subprocess.Popen' is not allowed"):  # a class named inside the kwargs
        legacy.load_network(tampered(lambda n: n['init_kwargs']['rendering_kwargs'].update(superresolution_module='subprocess.Popen')))
    with pytest.raises(IOError, match="class 'torch.nn.modules.linear.Identity' is not allowed"): # refused when saving
        legacy.save_safetensors(dict(ref, D=torch.nn.Identity()), str(tmp_path / 'identity.safetensors'))
    with open(tmp_path / 'cut.safetensors', 'wb') as f:
        f.write(blob[:len(blob) // 2])
    with pytest.raises(IOError, match='not a valid .safetensors network file'):
        legacy.load_network(str(tmp_path / 'cut.safetensors'))

def test_pickle_warning_once_and_suppressible(snapshot_pkl, capsys, monkeypatch):
    monkeypatch.delenv('EG3D_TRUST_PICKLES', raising=False)
    monkeypatch.setattr(legacy, '_pickle_warned', False)
    legacy.load_network(snapshot_pkl, trusted=True)
    assert 'runs code' not in capsys.readouterr().err
    legacy.load_network(snapshot_pkl)
    legacy.load_network(snapshot_pkl)
    assert capsys.readouterr().err.count('Warning: loading a pickle runs code stored in it') == 1
