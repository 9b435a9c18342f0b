"""The viewer's web app on viser: a control panel, the browser's own orbit camera, and one render worker thread that
runs every load, render and export (renders: latest request wins) while viser's event loop keeps serving the page."""

import collections
import errno
import html
import ipaddress
import json
import logging
import math
import os
import socket
import threading
import traceback
from typing import Any, Callable, Dict, Hashable, Optional, Tuple

import numpy as np
import viser
import viser.transforms

import dnnlib
from viz.renderer import Renderer, parse_params

logger = logging.getLogger('viz')

# Page labels -> renderer names.
CAMERAS = {'orbit (drag / scroll)': 'orbit', 'learned distribution (3DGP)': 'learned', 'prior sample': 'prior'}
VIEWS = {'RGB': 'rgb', 'RGB (neural rendering)': 'raw', 'Depth': 'depth', 'Adapted depth': 'depth_adapted'}
RANDOM_CLASS = 'random (per seed)'
LETTERBOX = (30, 31, 34) # fill beside the square frame, the panel's dark grey

def is_loopback(host: str) -> bool:
    """True for addresses (or 'localhost') that only this machine can reach."""
    if host.strip('[]').lower() == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host.strip('[]')).is_loopback
    except ValueError:
        return False

def check_bindable(host: str, port: int) -> int:
    """The port that viser will bind: `port` or, when taken, the next free one (0: any free port). Raises IOError
    when the address is not this machine's or every port from `port` to 65535 is taken: viser moves on to the next
    port after any bind error and waits forever when the address itself is the problem or it runs past 65535."""
    try:
        family, kind, _proto, _name, addr = socket.getaddrinfo(host.strip('[]'), 0, type=socket.SOCK_STREAM)[0]
    except OSError as err:
        raise IOError(f'cannot listen on {host}: {err}') from err
    for attempt in range(port, 65536) if port else (0,):
        with socket.socket(family, kind) as sock:
            if os.name == 'posix': # as viser (asyncio) binds: a port held by no listening socket is free
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((addr[0], attempt) + tuple(addr[2:]))
                return attempt
            except OSError as err:
                if err.errno != errno.EADDRINUSE:
                    raise IOError(f'cannot listen on {host}: {err}') from err
    raise IOError(f'cannot listen on {host}: every port from {port} to 65535 is taken')

def start_viser(host: str, port: int, timeout: float, **kwargs: Any) -> viser.ViserServer:
    """viser.ViserServer(host, port, **kwargs), or IOError when it has not started within `timeout` seconds: its
    constructor waits, without a timeout, for a server thread that may have died."""
    started: Dict[str, Any] = {}
    def construct():
        try:
            started['server'] = viser.ViserServer(host=host, port=port, **kwargs)
        except Exception as err: # pylint: disable=broad-except
            started['error'] = err
    thread = threading.Thread(target=construct, name='viz-viser-start', daemon=True) # a hung one never blocks exit
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise IOError(f'viser did not start listening on {host}:{port} within {timeout:g} s')
    if 'error' in started:
        raise IOError(f'cannot start viser on {host}:{port}: {started["error"]}') from started['error']
    return started['server']

def _tab_id(client: Optional[viser.ClientHandle]) -> Optional[int]:
    return None if client is None else client.client_id

def _html_line(text: str, color: str = 'inherit') -> str:
    """A line of text for the panel, escaped: paths and error messages are not HTML (nor markdown)."""
    return f'<div style="font-size:0.875em;padding:0 0.75em;color:{color}">{html.escape(text)}</div>'

#----------------------------------------------------------------------------
# The browser's camera <-> the generator's square frame.

def camera_pose(wxyz: np.ndarray, position: np.ndarray, fov: float, width: int, height: int) -> Tuple[list, float]:
    """A viser client camera -> (pose, focal) for the renderer. viser's camera frame is OpenCV's (x right, y down,
    z forward) like EG3D's cam2world, so the pose is [R | t] as is; `fov` is the canvas' vertical field of view
    (radians) and the frame covers the canvas' central square, hence focal / side = (height / 2) / tan(fov / 2) / side.
    """
    pose = np.eye(4)
    pose[:3, :3] = viser.transforms.SO3(np.asarray(wxyz, dtype=np.float64)).as_matrix()
    pose[:3, 3] = position
    focal = 0.5 * height / min(width, height) / math.tan(fov / 2)
    return pose.ravel().tolist(), focal

def letterbox(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pad a square frame to the canvas' aspect ratio, centred: viser stretches the background over the canvas."""
    side = img.shape[0]
    out_h, out_w = (side, round(side * width / height)) if width >= height else (round(side * height / width), side)
    out = np.empty((out_h, out_w, 3), dtype=np.uint8)
    out[:] = LETTERBOX
    top, left = (out_h - side) // 2, (out_w - side) // 2
    out[top:top + side, left:left + side] = img
    return out

#----------------------------------------------------------------------------
# The render worker: the only thread that touches the generator, so viser's threads never block on torch.

class Ticket:
    """One unit of work for the worker; `done` is set when it ran, failed or was superseded (dropped unrun). `owner`
    is the browser tab that asked for it (None: no tab), the one told when it fails."""
    def __init__(self, fn: Callable[[], Any], owner: Optional[Hashable] = None):
        self.fn, self.owner, self.done = fn, owner, threading.Event()
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.superseded = False

    def drop(self) -> None:
        self.superseded = True
        self.done.set()

class RenderWorker:
    """Jobs (load, save, export) run in FIFO order, before renders. Renders are latest-request-wins per key (one key
    per browser tab): a render still waiting when a newer one with its key arrives is dropped (marked superseded), so
    a slow render never builds a backlog. Errors go to `on_error(error, owner)` (the page) and the log; the worker
    survives them."""

    def __init__(self, on_error: Callable[[BaseException, Optional[Hashable]], None] = lambda err, owner: None):
        self.on_error = on_error
        self._cv = threading.Condition()
        self._jobs: collections.deque = collections.deque()
        self._renders: Dict[Hashable, Ticket] = {} # insertion order = request order
        self._stop = False
        self.busy = False
        self._thread = threading.Thread(target=self._run, name='viz-render-worker', daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any], key: Optional[Hashable] = None, owner: Optional[Hashable] = None) -> Ticket:
        """Queue fn: a job when key is None, else the render for key (replacing a waiting one). `owner` (default: key)
        is the tab to tell about an error. After stop() the ticket comes back already dropped."""
        ticket = Ticket(fn, owner=key if owner is None else owner)
        with self._cv:
            if self._stop:
                ticket.drop()
            elif key is None:
                self._jobs.append(ticket)
            else:
                stale = self._renders.pop(key, None)
                if stale is not None:
                    stale.drop()
                self._renders[key] = ticket
            self._cv.notify()
        return ticket

    def _run(self) -> None:
        while True:
            with self._cv:
                while not (self._stop or self._jobs or self._renders):
                    self._cv.wait()
                if self._stop:
                    return
                if self._jobs:
                    ticket = self._jobs.popleft()
                else:
                    ticket = self._renders.pop(next(iter(self._renders)))
                self.busy = True
            try:
                ticket.result = ticket.fn()
            except BaseException as err: # reported to the page; the worker must survive anything
                ticket.error = err
                if isinstance(err, (ValueError, IOError)):
                    logger.error('%s', err)
                else:
                    logger.error('render worker: %s', ''.join(traceback.format_exception(err)))
                try:
                    self.on_error(err, ticket.owner)
                except Exception: # pylint: disable=broad-except
                    logger.exception('cannot report an error to the page')
            finally:
                self.busy = False
                ticket.done.set()

    def stop(self, timeout: Optional[float] = 60) -> bool:
        """Drop every waiting ticket (superseded, done: nobody waits on them forever), let the running one finish and
        end the thread. Returns False when it is still running after `timeout` seconds (None: wait as long as it
        takes); the thread is a daemon, so it never keeps the process alive."""
        with self._cv:
            self._stop = True
            for ticket in list(self._jobs) + list(self._renders.values()):
                ticket.drop()
            self._jobs.clear()
            self._renders.clear()
            self._cv.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()

#----------------------------------------------------------------------------

class ViewerServer:
    """`start()` binds host:port (0 = a free port; a taken one moves on to the next), builds the page's controls and
    loads `network` in the background. Every connected tab renders from its own camera, with the shared controls."""

    def __init__(self, network: Optional[str] = None, host: str = '127.0.0.1', port: int = 8080, device: str = 'cpu',
                 outdir: str = 'viewer_out', verbose: bool = False, start_timeout: float = 60):
        self.network, self.host, self.port, self.verbose = network, host, port, verbose
        self.start_timeout = start_timeout
        self.renderer = Renderer(device=device, outdir=outdir)
        self.worker: Optional[RenderWorker] = None
        self.viser: Optional[viser.ViserServer] = None
        self.frames: Dict[int, Dict[str, Any]] = {} # latest frame shown in each open tab (client id), for the tests
        self._tabs_lock = threading.Lock() # per-tab state written by the worker vs. the tab closing
        self._notified: Dict[int, str] = {} # last error notification of each tab, not to repeat it back-to-back
        self._load_state: Dict[str, Any] = dict(status='empty', error=None, network=None)
        self._load_ticket: Optional[Ticket] = None

    @property
    def url(self) -> str:
        host = self.host if ':' not in self.host else f'[{self.host}]'
        return f'http://{host}:{self.port}/'

    def start(self) -> str:
        """Listen, build the page and start loading `network` (in the background: see wait_loaded()); returns the
        URL. Raises IOError when the address cannot be bound or viser has not started within start_timeout seconds."""
        port = check_bindable(self.host, self.port)
        self.viser = start_viser(self.host, port, self.start_timeout, label='EG3D / 3DGP viewer', verbose=self.verbose)
        self.port = self.viser.get_port()
        # No share button: viser's share link tunnels the page through an outside server.
        self.viser.gui.configure_theme(dark_mode=True, show_share_button=False, control_width='medium')
        self.viser.gui.main_panel.dock_right() # beside the frame, not over it
        self.viser.scene.set_up_direction('+y') # EG3D's world: +y up, faces look along -z
        self._build_gui()
        self.viser.on_client_connect(self._on_connect)
        self.viser.on_client_disconnect(self._on_disconnect)
        self.worker = RenderWorker(on_error=self._show_error)
        if self.network:
            self.load(self.network)
        return self.url

    def close(self) -> None:
        """Stop the render worker (waiting tickets are dropped, the running one finishes), then the web server."""
        if self.worker is not None and not self.worker.stop():
            logger.warning('the render worker is still busy; stopping the web server all the same')
        if self.viser is not None:
            self.viser.stop()

    #------------------------------------------------------------------------
    # The page.

    def _build_gui(self) -> None:
        gui = self.viser.gui
        self.gui_status = gui.add_html('')   # what the latest frame or job did
        self.gui_message = gui.add_html('')  # errors (red) and notes on the view; on top, always in sight
        with gui.add_folder('Network'):
            self.gui_network = gui.add_text('Path', self.network or '', hint='.pkl or .safetensors on this machine')
            self.gui_load = gui.add_button('Load')
            self.gui_netinfo = gui.add_markdown('*no network*')
        with gui.add_folder('Latent'):
            self.gui_seed = gui.add_number('Seed', 0, min=0, max=2**32 - 1, step=1)
            self.gui_class = gui.add_dropdown('Class', (RANDOM_CLASS,), visible=False)
            self.gui_psi = gui.add_slider('Truncation psi', min=0.0, max=1.0, step=0.05, initial_value=1.0)
        with gui.add_folder('Camera'):
            self.gui_camera = gui.add_dropdown('Camera', tuple(k for k, v in CAMERAS.items() if v != 'learned'))
            self.gui_fov = gui.add_slider('FOV (deg)', min=5.0, max=90.0, step=0.1, initial_value=15.0)
            self.gui_reset = gui.add_button('Reset camera')
        with gui.add_folder('Rendering'):
            self.gui_view = gui.add_dropdown('View', tuple(VIEWS))
            self.gui_nrr = gui.add_number('Neural rendering res.', 64, min=4, max=1024, step=8)
        with gui.add_folder('Export'):
            self.gui_save = gui.add_button('Save image')
            self.gui_mesh_res = gui.add_number('Mesh resolution', 128, min=8, max=1024, step=8)
            self.gui_export = gui.add_button('Export mesh')
        with gui.add_folder('Training options', expand_by_default=False):
            self.gui_options = gui.add_markdown('*no network*')

        for handle in (self.gui_seed, self.gui_class, self.gui_psi, self.gui_camera, self.gui_view, self.gui_nrr):
            handle.on_update(lambda _event: self.request_all())
        self.gui_fov.on_update(lambda _event: self._set_fov(self.gui_fov.value))
        self.gui_reset.on_click(lambda _event: self.reset_cameras())
        self.gui_load.on_click(lambda event: self.load(self.gui_network.value.strip(), event.client))
        self.gui_save.on_click(lambda event: self.save_image(event.client))
        self.gui_export.on_click(lambda event: self.export_mesh(event.client))

    def _on_connect(self, client: viser.ClientHandle) -> None:
        client.camera.on_update(lambda camera: self.request_render(camera.client))
        self.request_render(client)

    def _on_disconnect(self, client: viser.ClientHandle) -> None:
        with self._tabs_lock: # viser has already removed the tab: no frame for it gets stored after this
            self.frames.pop(client.client_id, None)
            self._notified.pop(client.client_id, None)

    def _set_status(self, text: str) -> None:
        self.gui_status.content = _html_line(text)

    def _set_message(self, text: str, error: bool = False) -> None:
        self.gui_message.content = _html_line(text, '#ff7b72' if error else 'inherit') if text else ''

    def _show_error(self, err: BaseException, owner: Optional[Hashable]) -> None:
        """An error in the panel, and as a notification in the tab whose request failed (owner: its client id) unless
        that tab was just shown the same message: a failing render fails again on every camera move."""
        msg = str(err) or type(err).__name__
        self._set_message(msg, error=True)
        with self._tabs_lock:
            client = self._clients().get(owner) if owner is not None else None
            if client is None or self._notified.get(owner) == msg:
                return
            self._notified[owner] = msg
        client.add_notification('Error', msg, color='red', auto_close_seconds=10)

    def _clients(self) -> Dict[int, viser.ClientHandle]:
        return self.viser.get_clients() if self.viser is not None else {}

    #------------------------------------------------------------------------
    # Rendering.

    def params(self, client: Optional[viser.ClientHandle] = None) -> Tuple[dnnlib.EasyDict, Tuple[int, int]]:
        """(render parameters, canvas (width, height)) from the controls and the tab's camera, read once so that the
        pose and the canvas size belong together (client None: the generator's frontal camera, canvas (0, 0))."""
        d = dict(seed=self.gui_seed.value, psi=self.gui_psi.value, nrr=self.gui_nrr.value,
                 camera=CAMERAS[self.gui_camera.value], view=VIEWS[self.gui_view.value],
                 class_idx=None if self.gui_class.value == RANDOM_CLASS else int(self.gui_class.value))
        canvas = (0, 0)
        if client is not None:
            cam = client.camera
            canvas = (cam.image_width, cam.image_height)
            d['pose'], d['focal'] = camera_pose(cam.wxyz, cam.position, cam.fov, *canvas)
        return parse_params(d), canvas

    def request_render(self, client: viser.ClientHandle) -> Optional[Ticket]:
        """Queue a frame for one tab; the parameters are read when it runs, so a dropped request loses nothing."""
        if self.renderer.G is None or self.worker is None:
            return None
        return self.worker.submit(lambda: self._render_for(client), key=client.client_id)

    def request_all(self) -> None:
        """Queue a frame for every open tab (after a change to the shared controls)."""
        for client in self._clients().values():
            self.request_render(client)

    def _render_for(self, client: viser.ClientHandle) -> None:
        if client.client_id not in self._clients(): # the tab closed while the request waited
            return
        p, canvas = self.params(client)
        result = self.renderer.render(p)
        client.scene.set_background_image(letterbox(result['image'], *canvas), format='png')
        with self._tabs_lock:
            if client.client_id in self._clients():
                self.frames[client.client_id] = dict(result, params=p)
            self._notified.pop(client.client_id, None) # it renders again: a new failure is news
        h, w = result['image'].shape[:2]
        status = f'seed {p.seed}, {w}x{h}, {result["ms"]} ms'
        if p.camera != 'orbit': # sampled cameras, in 3DGP's convention (yaw about +y, pitch = polar angle)
            c = result['camera']
            status += (f'; {p.camera} camera: yaw {c["yaw"]:.2f}, polar {c["pitch"]:.2f}, radius {c["radius"]:.2f}, '
                       f'fov {c["fov"]:.1f}')
        self._set_status(status)
        self._set_message(result['note'])
        logger.debug('tab %d: %s', client.client_id, status)

    def _set_fov(self, fov_deg: float) -> None:
        self.viser.initial_camera.fov = math.radians(fov_deg)
        for client in self._clients().values():
            client.camera.fov = math.radians(fov_deg) # the tab then reports its camera: a new frame follows

    def reset_cameras(self) -> None:
        """Every tab back to the generator's frontal camera (the view EG3D renders by default)."""
        cam = self.renderer.info.get('camera')
        if cam is None:
            return
        position, look_at, fov = self._frontal_view(cam)
        init = self.viser.initial_camera
        init.look_at, init.up, init.position, init.fov = look_at, (0.0, 1.0, 0.0), position, fov
        for client in self._clients().values():
            with client.atomic(): # viser keeps the look-at point only when it is set after the position
                client.camera.up_direction = (0.0, 1.0, 0.0)
                client.camera.position = position
                client.camera.look_at = look_at
                client.camera.fov = fov
        self.gui_fov.value = math.degrees(fov)

    @staticmethod
    def _frontal_view(cam: Dict[str, Any]) -> Tuple[Tuple[float, ...], Tuple[float, ...], float]:
        """(position, look-at point, vertical fov in radians) of the renderer's frontal camera."""
        pose = np.asarray(cam['pose']).reshape(4, 4)
        return tuple(pose[:3, 3].tolist()), tuple(float(v) for v in cam['pivot']), 2 * math.atan(0.5 / cam['focal'])

    #------------------------------------------------------------------------
    # Loading and exports (jobs: never dropped, run in order).

    def load(self, path: str, client: Optional[viser.ClientHandle] = None) -> Ticket:
        """Queue loading a network (.pkl or .safetensors); on failure the previous one stays loaded, the error shows
        in the panel (and in `client`'s tab, the one that asked) and the ticket's error is an IOError."""
        self._load_state = dict(status='loading', error=None, network=path)
        self._set_status(f'Loading {path}...')
        self._set_message('')
        logger.info('Loading network "%s"...', path)
        def job():
            try:
                info = self.renderer.load(path)
            except Exception as err:
                self._load_state = dict(status='error', error=f'Cannot load network: {err}', network=path)
                kept = '' if self.renderer.G is None else ': the previous network stays loaded'
                self._set_status('Load failed' + kept)
                raise IOError(self._load_state['error']) from err
            logger.info('Loaded %s (%s) on %s', info['generator'], info['kind'], info['device'])
            self._load_state = dict(status='ready', error=None, network=path)
            self._on_loaded(info)
            return info
        self._load_ticket = self.worker.submit(job, owner=_tab_id(client))
        return self._load_ticket

    def _on_loaded(self, info: Dict[str, Any]) -> None:
        """Fit the controls to the new network, then move every tab to its frontal camera (which renders)."""
        self.gui_network.value = info['network']
        self.gui_netinfo.content = (f'{info["kind"]} `{info["generator"]}`, {info["img_resolution"]} px, '
                                    f'{info["device"]}')
        self.gui_class.options = (RANDOM_CLASS,) + tuple(str(k) for k in range(info['num_classes']))
        self.gui_class.visible = info['num_classes'] > 0
        cameras = [k for k, v in CAMERAS.items() if v != 'learned' or info['learns_camera']]
        self.gui_camera.options = tuple(cameras)
        self.gui_nrr.value = info['default_nrr']
        text = json.dumps(info['training_options'], indent=2)
        self.gui_options.content = f'```json\n{text}\n```'
        self.reset_cameras()
        self.request_all()

    def wait_loaded(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Wait (at most `timeout` seconds; None: until it ends, which close() also ensures) for the latest load, then
        return info()."""
        if self._load_ticket is not None:
            self._load_ticket.done.wait(timeout)
        return self.info()

    def info(self) -> Dict[str, Any]:
        """The loaded network's description merged with the state of the latest load (loading / error)."""
        info = dict(self.renderer.info)
        info.update(load=self._load_state, busy=bool(self.worker and self.worker.busy))
        if self._load_state['status'] in ('loading', 'error'):
            info['status'], info['error'] = self._load_state['status'], self._load_state['error']
        return info

    def _export(self, client: Optional[viser.ClientHandle], what: str, fn: Callable[[dnnlib.EasyDict], str]) -> Ticket:
        """Run an export job: write into --outdir, then offer the file to the tab that asked as a browser download."""
        def job():
            path = fn(self.params(client)[0])
            logger.info('%s: wrote %s', what, path)
            self._set_status(f'{what}: saved {path}')
            if client is not None:
                with open(path, 'rb') as f:
                    client.send_file_download(os.path.basename(path), f.read(), save_immediately=True)
            return path
        return self.worker.submit(job, owner=_tab_id(client))

    def save_image(self, client: Optional[viser.ClientHandle] = None) -> Ticket:
        """Queue saving the frame of `client`'s camera (None: the frontal camera) as PNG into --outdir, downloaded by
        that tab; the ticket's result is the file's absolute path."""
        return self._export(client, 'Save image', self.renderer.save_image)

    def export_mesh(self, client: Optional[viser.ClientHandle] = None) -> Ticket:
        """Queue exporting the current latent's density volume (.mrc) and mesh (.ply) at the page's mesh resolution
        into --outdir, the .ply downloaded by `client`'s tab; the ticket's result is the .ply's absolute path."""
        return self._export(client, 'Export mesh', lambda p: self.renderer.export_mesh(p, int(self.gui_mesh_res.value)))

#----------------------------------------------------------------------------
