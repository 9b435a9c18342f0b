"""Viewer app (viser): starts on a free loopback port and serves the page, maps the browser camera to EG3D's, renders
frames that match G, exports files, loads pickles and .safetensors, and shows errors in the page instead of crashing."""

import contextlib
import math
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import PIL.Image
import pytest
import torch
import viser
import viser.transforms

import gen_utils
import shape_utils
from viz.renderer import parse_params
from tests._tiny_generators import tiny_eg3d_G
from viz.server import RenderWorker, ViewerServer, camera_pose, is_loopback, letterbox

EG3D_FOCAL = 4.2634 # camera_utils.FOV_to_intrinsics(18.837)

#----------------------------------------------------------------------------

def run(server, fn, key=None, timeout=120):
    """Run fn on the viewer's render worker and wait for it, as the page's requests do."""
    ticket = server.worker.submit(fn, key=key)
    assert ticket.done.wait(timeout) and not ticket.superseded
    if ticket.error is not None:
        raise ticket.error
    return ticket.result

def render(server, **params):
    return run(server, lambda: server.renderer.render(parse_params(params)), key='test')['image']

def browser_camera(position=(0, 0, 2.7), look_at=(0, 0, 0.2), focal=EG3D_FOCAL, width=960, height=640):
    """(pose, focal) of a viser client camera at `position` looking at `look_at` with +y up (what the page's orbit
    controls hold), on a width x height canvas. Default: EG3D's frontal camera (radius 2.7 from the origin)."""
    z = np.subtract(look_at, position) / np.linalg.norm(np.subtract(look_at, position))
    x = np.cross(z, [0, 1, 0])
    x /= np.linalg.norm(x)
    wxyz = viser.transforms.SO3.from_matrix(np.stack([x, np.cross(z, x), z], axis=1)).wxyz # OpenCV: y down
    fov = 2 * math.atan(0.5 / focal) # vertical: the frame is the canvas' central square when width >= height
    return camera_pose(wxyz, np.array(position, dtype=np.float64), fov, width, height)

def http_get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read()

def viewer_process(cwd, *args):
    """`viewer.py args` on the CPU, and a queue of its output lines (None at the end) filled by a thread: readline()
    has no timeout of its own."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, os.path.join(root, 'viewer.py'), '--device', 'cpu', *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=str(cwd))
    lines = queue.Queue()
    def read():
        for line in iter(proc.stdout.readline, ''):
            lines.put(line)
        lines.put(None)
    threading.Thread(target=read, daemon=True).start()
    return proc, lines

def read_until(lines, done, timeout=60):
    """Output from the queue until done(output so far) or its end; fails after `timeout` seconds."""
    text, deadline = '', time.monotonic() + timeout
    while not done(text):
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0))
        except queue.Empty:
            pytest.fail(f'timed out waiting for viewer.py, which wrote:\n{text}')
        if line is None:
            break
        text += line
    return text

#----------------------------------------------------------------------------

def test_page_served_and_controls_filled(viewer):
    code, html = http_get(viewer.url)
    assert code == 200 and b'<html' in html.lower() and b'<script' in html
    info = viewer.info()
    assert info['status'] == 'ready' and info['kind'] == 'EG3D' and not info['learns_camera']
    assert info['img_resolution'] == 128 and info['default_nrr'] == 16 and info['num_classes'] == 0
    opts = info['training_options']
    assert opts['training_set_kwargs']['path'] == 'tiny.zip'
    assert opts['training_options.json'] == dict(batch_size=4, gamma=1.0, cfg='tiny')
    assert opts['G_init_kwargs']['img_resolution'] == 128 and opts['rendering_kwargs']['ray_start'] == 2.25
    # The page's panels: network, training options, controls fitted to this EG3D net.
    assert 'EG3D' in viewer.gui_netinfo.content and '"training_options.json"' in viewer.gui_options.content
    assert viewer.gui_nrr.value == 16 and not viewer.gui_class.visible
    assert 'learned distribution (3DGP)' not in viewer.gui_camera.options
    assert viewer.gui_fov.value == pytest.approx(math.degrees(2 * math.atan(0.5 / EG3D_FOCAL)), abs=1e-3)
    assert np.allclose(viewer.viser.initial_camera.position, [0, 0, 2.7], atol=1e-6) and \
        np.allclose(viewer.viser.initial_camera.look_at, [0, 0, 0.2])

def test_browser_camera_mapping():
    pose, focal = browser_camera()
    c2w = np.array(pose).reshape(4, 4)
    assert np.allclose(c2w[:3, :3], np.diag([1, -1, -1]), atol=1e-12) and np.allclose(c2w[:3, 3], [0, 0, 2.7])
    assert focal == pytest.approx(EG3D_FOCAL)
    assert browser_camera(width=320, height=640)[1] == pytest.approx(2 * EG3D_FOCAL) # portrait: the square is narrower
    import gen_utils # the viewer's camera and gen_utils' orbit camera agree (EG3D's LookAtPoseSampler)
    position = (2.7 * math.sin(0.5), 0, 2.7 * math.cos(0.5))
    ref = gen_utils.lookat_cameras(tiny_eg3d_G(), [0.5], [0.0])[0, :16].numpy().reshape(4, 4)
    assert np.allclose(np.array(browser_camera(position)[0]).reshape(4, 4), ref, atol=1e-6)
    frame = np.full((16, 16, 3), 200, dtype=np.uint8)
    wide, tall = letterbox(frame, 960, 640), letterbox(frame, 320, 640)
    assert wide.shape == (16, 24, 3) and np.array_equal(wide[:, 4:20], frame) and (wide[:, :4] != 200).all()
    assert tall.shape == (32, 16, 3) and np.array_equal(tall[8:24], frame)

def test_render_matches_generator_forward(viewer, eg3d_pkl):
    """The browser's camera at EG3D's frontal pose must give exactly G(z, c) of the pickle."""
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
    ref_raw = (out['image_raw'][0] * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    pose, focal = browser_camera()
    img = render(viewer, seed=seed, nrr=16, pose=pose, focal=focal)
    assert img.shape == (128, 128, 3) and np.abs(img.astype(int) - ref).max() <= 1
    raw = render(viewer, seed=seed, view='raw', nrr=16, pose=pose, focal=focal)
    assert raw.shape == (16, 16, 3) and np.abs(raw.astype(int) - ref_raw).max() <= 1
    assert np.array_equal(render(viewer, seed=seed, nrr=16), img) # no camera yet: the frontal one

def test_render_seed_camera_views_and_backbone_cache(viewer):
    a, b = render(viewer, seed=0), render(viewer, seed=1)
    assert np.abs(a.astype(int) - b).mean() > 0.5 # another seed, another image
    pose, focal = browser_camera((1.0, 0.3, 2.6))
    turned = render(viewer, seed=0, pose=pose, focal=focal)
    assert np.abs(a.astype(int) - turned).mean() > 0.5
    assert np.array_equal(render(viewer, seed=0), a) # rendered from the cached tri-planes of seed 0
    depth = render(viewer, seed=0, view='depth', nrr=24)
    assert depth.shape == (24, 24, 3) and depth.std() > 0 and np.array_equal(depth[..., 0], depth[..., 1])
    result = run(viewer, lambda: viewer.renderer.render(parse_params(dict(seed=0, view='depth_adapted'))))
    assert 'no depth adaptor' in result['note'] and result['image'].shape == (16, 16, 3)
    prior = run(viewer, lambda: viewer.renderer.render(parse_params(dict(seed=0, camera='prior'))))
    assert not np.array_equal(prior['image'], a) and abs(prior['camera']['yaw']) > 1e-4
    truncated, truncated1 = render(viewer, seed=0, psi=0.0), render(viewer, seed=1, psi=0.0)
    # psi = 0: every seed maps to w_avg (only the ray jitter differs)
    assert np.abs(truncated.astype(int) - truncated1).mean() < 0.3 * np.abs(a.astype(int) - b).mean()

def test_save_image_and_export_mesh(viewer):
    viewer.gui_seed.value = 2
    try:
        ticket = viewer.save_image()
        assert ticket.done.wait(120) and ticket.error is None
        path = ticket.result
        assert os.path.dirname(path) == os.path.abspath(viewer.renderer.outdir)
        assert np.array_equal(np.asarray(PIL.Image.open(path).convert('RGB')), render(viewer, seed=2))
        again = viewer.save_image()
        assert again.done.wait(120) and again.result != path and os.path.isfile(path) # never overwrites
        viewer.gui_mesh_res.value = 20
        ticket = viewer.export_mesh()
        assert ticket.done.wait(120) and ticket.error is None, ticket.error
        verts, faces = shape_utils.read_ply(ticket.result)
        assert len(verts) > 0 and len(faces) > 0 and faces.max() < len(verts) and np.abs(verts).max() <= 0.5 + 1e-5
        assert shape_utils.read_mrc(ticket.result[:-4] + '.mrc').shape == (20, 20, 20)
        with pytest.raises(ValueError, match='mesh resolution'):
            run(viewer, lambda: viewer.renderer.export_mesh(parse_params(dict(seed=2)), 4))
    finally:
        viewer.gui_seed.value, viewer.gui_mesh_res.value = 0, 128

def test_export_mesh_without_surface_names_the_volume(viewer, monkeypatch):
    """A flat density volume: the automatic iso-level crosses no surface; the message says where the .mrc went."""
    monkeypatch.setattr(gen_utils, 'sample_density_volume', lambda G, ws, res: (np.ones((res,) * 3), 1 / res, -0.5))
    with pytest.raises(ValueError, match=r'no surface.*saved as .*\.mrc: try another iso-level') as err:
        run(viewer, lambda: viewer.renderer.export_mesh(parse_params(dict(seed=2)), 16))
    mrc = str(err.value).split('saved as ')[1].split(': try')[0]
    assert shape_utils.read_mrc(mrc).shape == (16, 16, 16)

def test_bad_params_are_clear_errors(viewer):
    for params, word in [(dict(view='normals'), 'view'), (dict(seed=-1), 'seed'), (dict(psi='abc'), 'psi'),
                         (dict(nrr=2), 'nrr'), (dict(pose=[0] * 15, focal=1), 'pose'), (dict(pose=[0] * 16), 'focal')]:
        with pytest.raises(ValueError, match=word):
            parse_params(params)
    with pytest.raises(ValueError, match='learned'):
        render(viewer, camera='learned')
    assert is_loopback('127.0.0.1') and is_loopback('localhost') and is_loopback('::1') and not is_loopback('0.0.0.0')
    with pytest.raises(IOError, match='cannot listen on'): # an address of no interface here (TEST-NET-3): no traffic
        ViewerServer(host='203.0.113.7', port=0).start()

@contextlib.contextmanager
def last_port_taken():
    """Hold 127.0.0.1:65535 for the block (if someone else holds it, it is taken all the same)."""
    with socket.socket() as taken:
        try:
            taken.bind(('127.0.0.1', 65535))
            taken.listen()
        except OSError:
            pass
        yield

def test_start_never_hangs(monkeypatch):
    """viser moves on from a taken port 65535 to 65536 and hangs: refused first. A start that hangs anyway times out."""
    with last_port_taken():
        with pytest.raises(IOError, match='every port from 65535 to 65535 is taken'):
            ViewerServer(port=65535).start()
    release = threading.Event()
    monkeypatch.setattr(viser, 'ViserServer', lambda **kwargs: release.wait(60))
    try:
        with pytest.raises(IOError, match='did not start listening on 127.0.0.1:0 within 0.5 s'):
            ViewerServer(port=0, start_timeout=0.5).start()
    finally:
        release.set()

def test_errors_notify_only_the_failing_tab(viewer, monkeypatch):
    class Tab:
        def __init__(self, client_id):
            self.client_id, self.notes = client_id, []
        def add_notification(self, title, body, **kwargs):
            self.notes.append(body)
    tabs = {1: Tab(1), 2: Tab(2)}
    monkeypatch.setattr(viewer, '_clients', lambda: tabs)
    try:
        for owner, msg in [(1, 'bad A'), (1, 'bad A'), (1, 'bad B'), (1, 'bad A'), (None, 'bad C')]:
            ticket = viewer.worker.submit(lambda msg=msg: int(msg), owner=owner)
            assert ticket.done.wait(30) and isinstance(ticket.error, ValueError)
        assert [n.split(': ')[-1] for n in tabs[1].notes] == ["'bad A'", "'bad B'", "'bad A'"] and tabs[2].notes == []
        assert 'bad C' in viewer.gui_message.content # no tab asked: the panel only
    finally:
        viewer._set_message('') # pylint: disable=protected-access

def test_slow_render_does_not_block_the_page(viewer):
    started, release = threading.Event(), threading.Event()
    slow = viewer.worker.submit(lambda: started.set() or release.wait(60)) # a render that takes a long time
    try:
        assert started.wait(60)
        assert http_get(viewer.url)[0] == 200 # the page still loads
        viewer.gui_seed.value = 5 # and the controls still answer: the change only queues work
        assert viewer.gui_seed.value == 5 and viewer.info()['busy'] and not slow.done.is_set()
    finally:
        release.set()
        viewer.gui_seed.value = 0
    assert slow.done.wait(30)
    render(viewer, seed=0) # and the worker carries on afterwards

def test_worker_latest_request_wins():
    errors = []
    worker = RenderWorker(on_error=lambda err, owner: errors.append((err, owner)))
    try:
        gate, ran = threading.Event(), []
        worker.submit(gate.wait)
        tickets = [worker.submit(lambda k=k: ran.append(k) or k, key='tab0') for k in range(3)]
        other = worker.submit(lambda: ran.append('tab1'), key='tab1') # another tab keeps its own request
        tickets[0].done.wait(5)
        assert tickets[0].superseded and tickets[1].superseded and not tickets[2].done.is_set()
        job = worker.submit(lambda: ran.append('job')) # jobs are never dropped, and run before waiting renders
        gate.set()
        assert tickets[2].done.wait(5) and job.done.wait(5) and other.done.wait(5)
        assert ran == ['job', 2, 'tab1'] and tickets[2].result == 2
        boom, boom_tab = worker.submit(lambda: 1 / 0), worker.submit(lambda: 1 / 0, key='tab3')
        assert boom.done.wait(5) and boom_tab.done.wait(5) and isinstance(boom.error, ZeroDivisionError)
        assert errors == [(boom.error, None), (boom_tab.error, 'tab3')] # shown in the page (the tab that asked)
        assert worker.submit(lambda: 7).done.wait(5) # still alive
    finally:
        worker.stop()

def test_worker_stop_drops_waiting_tickets():
    worker = RenderWorker()
    started, gate, ran = threading.Event(), threading.Event(), []
    running = worker.submit(lambda: started.set() or gate.wait(30))
    assert started.wait(30)
    waiting = [worker.submit(lambda: ran.append('job')), worker.submit(lambda: ran.append('render'), key='tab0')]
    stopper = threading.Thread(target=worker.stop)
    stopper.start()
    try:
        assert all(t.done.wait(30) and t.superseded for t in waiting) # nobody waits on them forever
        assert not running.done.is_set() # the running one finishes first
    finally:
        gate.set()
    stopper.join(30)
    assert not stopper.is_alive() and running.done.is_set() and running.result is True and ran == []
    late = worker.submit(lambda: ran.append('late'))
    assert late.done.is_set() and late.superseded and ran == []

def test_bad_network_paths_3dgp_and_safetensors(gp_pkl, safetensors_files, tmp_path):
    server = ViewerServer(network=str(tmp_path / 'missing.pkl'), port=0, outdir=str(tmp_path / 'out'))
    server.start()
    try:
        info = server.wait_loaded(30)
        assert info['status'] == 'error' and 'missing.pkl' in info['error'] and 'no such file' in info['error']
        assert 'missing.pkl' in server.gui_message.content and 'Load failed' in server.gui_status.content # in the page
        with pytest.raises(ValueError, match='no network is loaded'):
            render(server, seed=0)
        (tmp_path / 'garbage.pkl').write_bytes(b'not a pickle at all')
        server.gui_network.value = str(tmp_path / 'garbage.pkl')
        server.gui_load.value = True # what a click on Load does
        assert server.wait_loaded(30)['status'] == 'error' and 'garbage.pkl' in server.gui_message.content

        info = server.load(gp_pkl).done.wait(60) and server.info()
        assert info['status'] == 'ready' and info['kind'] == '3DGP' and info['learns_camera'] and info['depth_adaptor']
        assert server.gui_class.visible and server.gui_class.options == ('random (per seed)', '0', '1', '2')
        assert 'learned distribution (3DGP)' in server.gui_camera.options and server.gui_message.content == ''
        learned = run(server, lambda: server.renderer.render(parse_params(dict(seed=4, camera='learned', class_idx=1))))
        prior = run(server, lambda: server.renderer.render(parse_params(dict(seed=4, camera='prior', class_idx=1))))
        assert learned['image'].shape == (32, 32, 3) and learned['camera'] != prior['camera']
        assert np.array_equal(learned['image'], render(server, seed=4, camera='learned', class_idx=1)) # per seed
        adapted = run(server, lambda: server.renderer.render(parse_params(dict(seed=4, view='depth_adapted'))))
        assert adapted['note'] == '' and adapted['image'].std() > 0
        with pytest.raises(ValueError, match='out of range'):
            render(server, seed=0, class_idx=3)

        # Weights-only files of both families load and render exactly like their pickles.
        gp_ref = render(server, seed=4, class_idx=1)
        assert server.load(safetensors_files['3DGP']).done.wait(60) and server.info()['kind'] == '3DGP'
        assert server.info()['training_options']['training_set_kwargs'] == dict(path='3DGP.zip')
        assert np.array_equal(render(server, seed=4, class_idx=1), gp_ref)
        assert server.load(safetensors_files['EG3D']).done.wait(60) and server.info()['kind'] == 'EG3D'
        eg3d_frame = render(server, seed=1)
        assert eg3d_frame.shape == (128, 128, 3) and eg3d_frame.std() > 0
        server.load(str(tmp_path / 'model.safetensors')).done.wait(30)
        assert 'model.safetensors' in server.info()['error'] # a message, not a crash
        assert np.array_equal(render(server, seed=1), eg3d_frame) # the loaded net is still there
    finally:
        server.close()

def test_safetensors_renders_like_the_pickle(viewer, eg3d_pkl, safetensors_files, tmp_path):
    """The EG3D .safetensors holds the same weights as the viewer's pickle (both from tiny_eg3d_G)."""
    server = ViewerServer(network=safetensors_files['EG3D'], port=0, outdir=str(tmp_path))
    server.start()
    try:
        assert server.wait_loaded(60)['status'] == 'ready'
        pose, focal = browser_camera((-0.8, -0.2, 2.6))
        assert np.array_equal(render(server, seed=7, pose=pose, focal=focal),
                              render(viewer, seed=7, pose=pose, focal=focal))
    finally:
        server.close()

def test_cli_bad_network_serves_the_error(tmp_path):
    """`viewer.py --network=<missing>` keeps serving the page and logs the error."""
    proc, lines = viewer_process(tmp_path, '--network', str(tmp_path / 'nope.pkl'), '--port', '0',
                                 '--outdir', str(tmp_path))
    try:
        out = read_until(lines, lambda text: 'Cannot load network' in text and 'Viewer running at' in text)
        assert 'Viewer running at' in out and proc.poll() is None, 'viewer.py exited early:\n' + out
        url = out.split('Viewer running at ')[1].split()[0]
        assert url.startswith('http://127.0.0.1:')
        assert http_get(url)[0] == 200 and proc.poll() is None # still serving
    finally:
        proc.terminate()
        proc.wait(20)
    out += read_until(lines, lambda text: False)
    assert 'nope.pkl' in out and 'no such file' in out

def test_cli_last_port_taken_exits_with_a_message(tmp_path):
    with last_port_taken():
        proc, lines = viewer_process(tmp_path, '--port', '65535', '--outdir', str(tmp_path))
        try:
            out = read_until(lines, lambda text: False)
            assert proc.wait(30) != 0
        finally:
            proc.kill()
    assert 'cannot listen on 127.0.0.1: every port from 65535 to 65535 is taken' in out and 'running at' not in out

#----------------------------------------------------------------------------
