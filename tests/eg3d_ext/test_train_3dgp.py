"""End-to-end: train.py --cfg=3dgp on a tiny RGB-D zip (CPU, 1 and 2 processes); snapshots load back in a fresh
process with the camera generator, depth adaptor and KD head."""

import glob
import json
import math
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

@pytest.fixture(scope='module')
def rgbd_zip(tmp_path_factory):
    from eg3d_ext.datasets.synthetic import build_synthetic
    path = str(tmp_path_factory.mktemp('data') / 'tiny.zip')
    build_synthetic(path, num_images=16, resolution=32, seed=0, num_classes=3, workers=1, progress=False)
    emb = np.random.RandomState(0).randn(16, 2048).astype(np.float16)
    import io
    buf = io.BytesIO(); np.save(buf, emb)
    with zipfile.ZipFile(path, 'a', compression=zipfile.ZIP_STORED) as z:
        z.writestr('embeddings.npy', buf.getvalue())
    return path

def _train(outdir, data, gpus, kimg, extra=()):
    cmd = [sys.executable, os.path.join(ROOT, 'train.py'), f'--outdir={outdir}', '--cfg=3dgp', f'--data={data}',
           f'--gpus={gpus}', '--batch=4', '--gamma=1', '--mirror=1', '--cbase=256', '--cmax=8', '--patch-res=16',
           '--triplane-res=16', '--depth-resolution=4', '--depth-resolution-importance=4', f'--kimg={kimg}', f'--tick={kimg / 4}',
           '--plugin=eg3d_ext.plugin', '--snap=1', '--metrics=none', '--workers=1', '--mbstd-group=2',
           '--grid=2x2', *extra] # tiny sizes; the default snapshot grid (~1000 renders) would dominate the run
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return glob.glob(os.path.join(outdir, '*'))[0]

def _check_run(run_dir):
    pkls = sorted(glob.glob(os.path.join(run_dir, 'network-snapshot-*.pkl')))
    assert pkls, os.listdir(run_dir)
    stats = [json.loads(l) for l in open(os.path.join(run_dir, 'stats.jsonl'))]
    keys = set().union(*stats)
    for k in ['Loss/G/loss', 'Loss/D/loss', 'Loss/D/kd', 'Loss/r1_penalty', 'Loss/G/camera_force_mean', 'Loss/G/camera_emd']:
        assert k in keys, (k, sorted(keys))
    opts = json.load(open(os.path.join(run_dir, 'training_options.json')))
    assert opts['G_kwargs']['class_name'] == 'eg3d_ext.generator.Generator' and opts['D_kwargs']['kd_dim'] == 2048
    assert len(stats) == 5 and stats[-1]['Progress/kimg']['mean'] >= opts['total_kimg'] # ticks 0-4: the whole run
    for k in keys:
        if k.startswith('Loss/'):
            assert all(math.isfinite(s[k]['mean']) for s in stats if k in s), k
    code = f'''
import pickle, sys, torch
sys.path.insert(0, {ROOT!r})
with open({pkls[-1]!r}, 'rb') as f: # plain unpickling, as the official EG3D code would do: no plugin loaded
    data = pickle.load(f)
G, D = data['G_ema'], data['D']
assert not any(m.startswith('eg3d_ext') for m in sys.modules if 'dataset' not in m), sorted(m for m in sys.modules if m.startswith('eg3d_ext'))
assert type(G.camera_generator).__name__ == 'CameraGenerator' and type(G.depth_adaptor).__name__ == 'DepthAdaptor'
assert D.b4.kd_out.weight.shape[0] == 2048
out = G(torch.randn(2, G.z_dim), torch.eye(G.c_dim)[:2] if G.c_dim else None)
assert out['image'].shape == (2, 3, 32, 32) and torch.isfinite(out['image']).all()
print('ok')
'''
    res = subprocess.run([sys.executable, '-c', code], cwd='/', capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert res.returncode == 0 and 'ok' in res.stdout, res.stderr[-3000:]

@pytest.mark.slow
def test_train_3dgp_cpu(tmp_path, rgbd_zip):
    _check_run(_train(str(tmp_path / 'out'), rgbd_zip, gpus=1, kimg=2)) # ~1 min: 500 steps of the tiny config

@pytest.mark.slow
def test_train_3dgp_two_processes(tmp_path, rgbd_zip):
    _check_run(_train(str(tmp_path / 'out'), rgbd_zip, gpus=2, kimg=2))
