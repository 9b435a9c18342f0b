"""Viewer server: starts on a free loopback port, serves the page, renders frames that match G, reports errors as JSON."""

import base64
import io
import json
import math
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import PIL.Image
import pytest
import torch

import shape_utils
from viz.renderer import parse_params
from viz.server import RenderWorker, ViewerServer, is_loopback

#----------------------------------------------------------------------------

def http(url, body=None, headers=None, timeout=30):
    """(status, parsed JSON or raw bytes) for a GET (body None) or a JSON POST."""
    hdrs = {'Content-Type': 'application/json'} if body is not None else {}
    hdrs.update(headers or {})
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            code, raw, ctype = r.status, r.read(), r.headers.get('Content-Type', '')
    except urllib.error.HTTPError as e:
        code, raw, ctype = e.code, e.read(), e.headers.get('Content-Type', '')
    return code, json.loads(raw) if ctype.startswith('application/json') else raw

def decode(data_url):
    assert data_url.startswith('data:image/png;base64,')
    return np.asarray(PIL.Image.open(io.BytesIO(base64.b64decode(data_url.split(',', 1)[1]))).convert('RGB'))

def render(server, **params):
    code, r = http(server.url + 'api/render', params)
    assert code == 200, r
    return decode(r['image']), r

#----------------------------------------------------------------------------

def test_page_info_and_training_options(viewer):
    code, html = http(viewer.url)
    assert code == 200 and b'/static/viewer.js' in html and b'id="frame"' in html
    code, js = http(viewer.url + 'static/viewer.js')
    assert code == 200 and b'/api/render' in js
    assert http(viewer.url + 'static/../server.py')[0] == 404
    assert http(viewer.url + 'static/%2e%2e%2fserver.py')[0] == 404
    code, info = http(viewer.url + 'api/info')
    assert code == 200 and info['status'] == 'ready' and info['kind'] == 'EG3D' and not info['learns_camera']
    assert info['img_resolution'] == 128 and info['default_nrr'] == 16 and info['num_classes'] == 0
    opts = info['training_options']
    assert opts['training_set_kwargs']['path'] == 'tiny.zip'
    assert opts['training_options.json'] == dict(batch_size=4, gamma=1.0, cfg='tiny')
    assert opts['G_init_kwargs']['img_resolution'] == 128 and opts['rendering_kwargs']['ray_start'] == 2.25

def test_render_matches_generator_forward(viewer, eg3d_pkl):
    """Orbit camera at yaw = pitch = 0 is EG3D's frontal camera, so the frame must equal G(z, c) of the pickle."""
    import camera_utils
    import legacy
    with open(eg3d_pkl, 'rb') as f:
        G = legacy.load_network_pkl(f)['G_ema']
    seed = 3
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).to(torch.float32)
    c2w = camera_utils.LookAtPoseSampler.sample(math.pi / 2, math.pi / 2, torch.tensor([0, 0, 0.2]), radius=2.7)
    c = torch.cat([c2w.reshape(1, 16), camera_utils.FOV_to_intrinsics(18.837).reshape(1, 9)], dim=1)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = G(z, c, noise_mode='const', neural_rendering_resolution=16)
    ref = (out['image'][0] * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    img, meta = render(viewer, seed=seed, nrr=16)
    assert img.shape == (128, 128, 3) and meta['width'] == 128
    assert np.abs(img.astype(int) - ref).max() <= 1
    assert meta['camera']['radius'] == pytest.approx(2.7, rel=1e-4)
    raw, _ = render(viewer, seed=seed, view='raw', nrr=16)
    ref_raw = (out['image_raw'][0] * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    assert raw.shape == (16, 16, 3) and np.abs(raw.astype(int) - ref_raw).max() <= 1

def test_render_seed_camera_views_and_backbone_cache(viewer):
    a, _ = render(viewer, seed=0)
    b, _ = render(viewer, seed=1)
    assert np.abs(a.astype(int) - b).mean() > 0.5 # another seed, another image
    turned, _ = render(viewer, seed=0, yaw=0.5, pitch=-0.2, radius=3.0)
    assert np.abs(a.astype(int) - turned).mean() > 0.5
    again, _ = render(viewer, seed=0) # rendered from the cached tri-planes of seed 0
    assert np.array_equal(a, again)
    depth, _ = render(viewer, seed=0, view='depth', nrr=24)
    assert depth.shape == (24, 24, 3) and depth.std() > 0 and np.array_equal(depth[..., 0], depth[..., 1])
    adapted, meta = render(viewer, seed=0, view='depth_adapted')
    assert 'no depth adaptor' in meta['note'] and adapted.shape == (16, 16, 3)
    prior, meta = render(viewer, seed=0, camera='prior')
    assert not np.array_equal(prior, a) and abs(meta['camera']['yaw']) > 1e-4
    truncated, _ = render(viewer, seed=0, psi=0.0)
    truncated1, _ = render(viewer, seed=1, psi=0.0) # psi = 0: every seed maps to w_avg (only ray jitter differs)
    assert np.abs(truncated.astype(int) - truncated1).mean() < 0.3 * np.abs(a.astype(int) - b).mean()

def test_save_image_and_export_mesh(viewer):
    img, _ = render(viewer, seed=2, yaw=0.2)
    code, r = http(viewer.url + 'api/save_image', dict(seed=2, yaw=0.2))
    assert code == 200 and os.path.dirname(r['path']) == os.path.abspath(viewer.renderer.outdir)
    assert np.array_equal(np.asarray(PIL.Image.open(r['path']).convert('RGB')), img)
    code, r2 = http(viewer.url + 'api/save_image', dict(seed=2, yaw=0.2))
    assert code == 200 and r2['path'] != r['path'] and os.path.isfile(r['path']) # never overwrites
    code, r = http(viewer.url + 'api/export_mesh', dict(seed=2, mesh_res=20))
    assert code == 200, r
    verts, faces = shape_utils.read_ply(r['path'])
    assert len(verts) > 0 and len(faces) > 0 and faces.max() < len(verts) and np.abs(verts).max() <= 0.5 + 1e-5
    assert shape_utils.read_mrc(r['mrc']).shape == (20, 20, 20)
    assert http(viewer.url + 'api/export_mesh', dict(seed=2, mesh_res=4))[1]['error'].startswith('mesh resolution')

def test_bad_requests_give_json_errors(viewer):
    for params, word in [(dict(view='normals'), 'view'), (dict(seed=-1), 'seed'), (dict(camera='learned'), 'learned'),
                         (dict(psi='abc'), 'psi'), (dict(nrr=2), 'nrr')]:
        code, r = http(viewer.url + 'api/render', params)
        assert code == 400 and word in r['error'], (params, r)
    assert http(viewer.url + 'api/render', dict(seed=0), headers={'Content-Type': 'text/plain'})[0] == 415
    assert http(viewer.url + 'api/render', dict(seed=0), headers={'Origin': 'http://evil.example'})[0] == 403
    assert http(viewer.url + 'api/info', headers={'Host': 'evil.example'})[0] == 403 # DNS rebinding
    assert http(viewer.url + 'api/nope', {})[0] == 404
    assert is_loopback('127.0.0.1') and is_loopback('localhost') and is_loopback('::1') and not is_loopback('0.0.0.0')
    with pytest.raises(ValueError, match='radius'):
        parse_params(dict(radius=0))

def test_slow_render_does_not_block_the_page(viewer):
    release = threading.Event()
    viewer.worker.submit(lambda: release.wait(20)) # a render that takes a long time
    try:
        t0 = time.perf_counter()
        code, info = http(viewer.url + 'api/info', timeout=5)
        assert code == 200 and info['busy'] and time.perf_counter() - t0 < 2
        assert http(viewer.url, timeout=5)[0] == 200
    finally:
        release.set()
    render(viewer, seed=0) # and the worker carries on afterwards

def test_worker_latest_request_wins():
    worker = RenderWorker()
    try:
        gate, ran = threading.Event(), []
        worker.submit(gate.wait)
        tickets = [worker.submit(lambda k=k: ran.append(k) or k, latest_wins=True) for k in range(3)]
        tickets[0].done.wait(5)
        assert tickets[0].superseded and tickets[1].superseded and not tickets[2].done.is_set()
        job = worker.submit(lambda: ran.append('job'))  # jobs are never dropped, and run before waiting renders
        gate.set()
        assert tickets[2].done.wait(5) and job.done.wait(5)
        assert ran == ['job', 2] and tickets[2].result == 2
        boom = worker.submit(lambda: 1 / 0)
        boom.done.wait(5)
        assert isinstance(boom.error, ZeroDivisionError) and worker.submit(lambda: 7).done.wait(5) # still alive
    finally:
        worker.stop()

def test_bad_network_paths_and_3dgp(gp_pkl, tmp_path):
    server = ViewerServer(network=str(tmp_path / 'missing.pkl'), port=0, outdir=str(tmp_path / 'out'))
    server.start()
    try:
        info = server.wait_loaded(30)
        assert info['status'] == 'error' and 'missing.pkl' in info['error'] and 'no such file' in info['error']
        code, r = http(server.url + 'api/render', dict(seed=0))
        assert code == 400 and 'no network is loaded' in r['error']
        (tmp_path / 'garbage.pkl').write_bytes(b'not a pickle at all')
        code, r = http(server.url + 'api/load', dict(network=str(tmp_path / 'garbage.pkl')))
        assert code == 400 and 'garbage.pkl' in r['error']
        code, info = http(server.url + 'api/load', dict(network=gp_pkl))
        assert code == 200 and info['status'] == 'ready' and info['kind'] == '3DGP' and info['learns_camera']
        assert info['num_classes'] == 3 and info['depth_adaptor']
        learned, meta_l = render(server, seed=4, camera='learned', class_idx=1)
        prior, meta_p = render(server, seed=4, camera='prior', class_idx=1)
        assert learned.shape == (32, 32, 3) and meta_l['camera'] != meta_p['camera']
        assert np.array_equal(learned, render(server, seed=4, camera='learned', class_idx=1)[0]) # fixed per seed
        adapted, meta = render(server, seed=4, view='depth_adapted', class_idx=2)
        assert meta['note'] == '' and adapted.std() > 0
        assert http(server.url + 'api/render', dict(seed=0, class_idx=3))[1]['error'].find('out of range') >= 0
        code, r = http(server.url + 'api/load', dict(network=str(tmp_path / 'model.safetensors')))
        assert code == 400 and 'model.safetensors' in r['error'] # a message, not a crash
        assert render(server, seed=4, class_idx=1)[0].shape == (32, 32, 3) # the loaded 3DGP net is still there
    finally:
        server.close()

def test_cli_bad_network_serves_the_error(tmp_path):
    """`viewer.py --network=<missing>` keeps running and shows the error in the page and the log."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, os.path.join(root, 'viewer.py'), '--network', str(tmp_path / 'nope.pkl'),
                             '--port', '0', '--device', 'cpu', '--outdir', str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=str(tmp_path))
    try:
        line = ''
        while 'Viewer running at' not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, 'viewer.py exited early'
        url = line.split('Viewer running at ')[1].split()[0]
        assert url.startswith('http://127.0.0.1:')
        for _ in range(100):
            info = http(url + 'api/info')[1]
            if info['status'] != 'loading':
                break
            time.sleep(0.1)
        assert info['status'] == 'error' and 'nope.pkl' in info['error']
        assert proc.poll() is None # still serving
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0]
    assert 'Cannot load network' in out and 'nope.pkl' in out

#----------------------------------------------------------------------------
