"""Local HTTP app of the viewer: static page, JSON API, and one render worker thread with latest-request-wins renders."""

import base64
import collections
import ipaddress
import json
import logging
import os
import threading
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Optional, Tuple

from viz.renderer import Renderer, parse_params

logger = logging.getLogger('viz')
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')
CONTENT_TYPES = {'.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
                 '.css': 'text/css; charset=utf-8', '.png': 'image/png'}
MAX_BODY = 1 << 20

def is_loopback(host: str) -> bool:
    """True for addresses (or 'localhost') that only this machine can reach."""
    if host.strip('[]').lower() == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host.strip('[]')).is_loopback
    except ValueError:
        return False

#----------------------------------------------------------------------------
# The render worker: the only thread that touches the generator, so the HTTP threads never block on torch.

class Ticket:
    """One unit of work for the worker; the HTTP thread waits on `done`."""
    def __init__(self, fn: Callable[[], Any]):
        self.fn, self.done = fn, threading.Event()
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.superseded = False

class RenderWorker:
    """Jobs (load, save, export) run in FIFO order; renders are latest-request-wins: a render still waiting when a
    newer one arrives is dropped (its ticket is marked superseded), so a slow render never builds a backlog."""

    def __init__(self):
        self._cv = threading.Condition()
        self._jobs: collections.deque = collections.deque()
        self._render: Optional[Ticket] = None
        self._stop = False
        self.busy = False
        self._thread = threading.Thread(target=self._run, name='viz-render-worker', daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any], latest_wins: bool = False) -> Ticket:
        ticket = Ticket(fn)
        with self._cv:
            if latest_wins:
                if self._render is not None:
                    self._render.superseded = True
                    self._render.done.set()
                self._render = ticket
            else:
                self._jobs.append(ticket)
            self._cv.notify()
        return ticket

    def _run(self) -> None:
        while True:
            with self._cv:
                while not (self._stop or self._jobs or self._render):
                    self._cv.wait()
                if self._stop:
                    return
                if self._jobs:
                    ticket = self._jobs.popleft()
                else:
                    ticket, self._render = self._render, None
                self.busy = True
            try:
                ticket.result = ticket.fn()
            except BaseException as err: # reported to the page; the worker must survive anything
                ticket.error = err
                if not isinstance(err, (ValueError, IOError)):
                    logger.error('render worker: %s', ''.join(traceback.format_exception(err)))
            finally:
                self.busy = False
                ticket.done.set()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=5)

#----------------------------------------------------------------------------

class ViewerServer:
    """`start()` binds host:port (0 = a free port), serves the page, and loads `network` in the background."""

    def __init__(self, network: Optional[str] = None, host: str = '127.0.0.1', port: int = 8080, device: str = 'cpu',
                 outdir: str = 'viewer_out', timeout: float = 600):
        self.network, self.host, self.port, self.timeout = network, host, port, timeout
        self.renderer = Renderer(device=device, outdir=outdir)
        self.worker: Optional[RenderWorker] = None
        self.httpd: Optional[ThreadingHTTPServer] = None
        self._load_state: Dict[str, Any] = dict(status='empty', error=None, network=None)
        self._load_ticket: Optional[Ticket] = None

    @property
    def url(self) -> str:
        host = self.host if ':' not in self.host else f'[{self.host}]'
        return f'http://{host}:{self.port}/'

    def start(self) -> str:
        handler = type('Handler', (_Handler,), dict(viewer=self))
        try:
            self.httpd = ThreadingHTTPServer((self.host, self.port), handler)
        except OSError as err:
            raise IOError(f'cannot listen on {self.host}:{self.port}: {err}') from err
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.worker = RenderWorker()
        if self.network:
            self.load(self.network)
        threading.Thread(target=self.httpd.serve_forever, name='viz-http', daemon=True).start()
        return self.url

    def load(self, path: str) -> Ticket:
        self._load_state = dict(status='loading', error=None, network=path)
        logger.info('Loading network "%s"...', path)
        def job():
            try:
                info = self.renderer.load(path)
            except BaseException as err:
                logger.error('Cannot load network "%s": %s', path, err)
                self._load_state = dict(status='error', error=f'Cannot load network: {err}', network=path)
                raise
            logger.info('Loaded %s (%s) on %s', info['generator'], info['kind'], info['device'])
            self._load_state = dict(status='ready', error=None, network=path)
            return info
        self._load_ticket = self.worker.submit(job)
        return self._load_ticket

    def wait_loaded(self, timeout: Optional[float] = None) -> Dict[str, Any]:
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

    def run(self, fn: Callable[[], Any], latest_wins: bool = False) -> Tuple[int, Dict[str, Any], Any]:
        """Run fn on the worker and wait: (http status, error payload or {}, result)."""
        ticket = self.worker.submit(fn, latest_wins=latest_wins)
        if not ticket.done.wait(self.timeout):
            return 504, dict(error=f'still working after {self.timeout:.0f} s; try again later'), None
        if ticket.superseded:
            return 409, dict(error='superseded by a newer request', superseded=True), None
        if ticket.error is not None:
            code = 400 if isinstance(ticket.error, (ValueError, IOError)) else 500
            return code, dict(error=str(ticket.error) or type(ticket.error).__name__), None
        return 200, {}, ticket.result

    def close(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
        if self.worker is not None:
            self.worker.stop()

#----------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    viewer: ViewerServer
    server_version = 'eg3d-viewer/1.0'

    def log_message(self, format: str, *args: Any) -> None: # pylint: disable=redefined-builtin
        logger.debug('%s %s', self.address_string(), format % args)

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(code)
            self.send_header('Content-Type', content_type)
            self.send_header('Content-Length', str(len(body)))
            self.send_header('Cache-Control', 'no-store')
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError): # the page went away; nothing to tell it
            pass

    def _json(self, code: int, obj: Dict[str, Any]) -> None:
        self._send(code, json.dumps(obj).encode('utf-8'), 'application/json')

    def _host_ok(self) -> bool:
        """Refuse other sites' pages (Origin) and DNS-rebinding names (Host) when bound to loopback."""
        host = urllib.parse.urlsplit('//' + self.headers.get('Host', '')).hostname or ''
        if is_loopback(self.viewer.host) and not is_loopback(host):
            return False
        origin = self.headers.get('Origin')
        return origin is None or urllib.parse.urlsplit(origin).netloc == self.headers.get('Host', '')

    def do_GET(self) -> None: # pylint: disable=invalid-name
        if not self._host_ok():
            return self._json(403, dict(error='forbidden host or origin'))
        path = urllib.parse.urlsplit(self.path).path
        if path == '/api/info':
            return self._json(200, self.viewer.info())
        name = 'index.html' if path in ('/', '/index.html') else path[len('/static/'):] if path.startswith('/static/') else None
        if name is None or name not in os.listdir(STATIC_DIR): # whitelist: no path traversal
            return self._json(404, dict(error=f'not found: {path}'))
        with open(os.path.join(STATIC_DIR, name), 'rb') as f:
            self._send(200, f.read(), CONTENT_TYPES.get(os.path.splitext(name)[1], 'application/octet-stream'))

    def do_POST(self) -> None: # pylint: disable=invalid-name
        if not self._host_ok():
            return self._json(403, dict(error='forbidden host or origin'))
        if self.headers.get('Content-Type', '').split(';')[0].strip() != 'application/json':
            return self._json(415, dict(error='expected Content-Type: application/json'))
        length = int(self.headers.get('Content-Length') or 0)
        if length > MAX_BODY:
            return self._json(413, dict(error='request too large'))
        try:
            body = json.loads(self.rfile.read(length) or b'{}')
            if not isinstance(body, dict):
                raise ValueError('expected a JSON object')
        except ValueError as err:
            return self._json(400, dict(error=f'bad JSON: {err}'))
        route = urllib.parse.urlsplit(self.path).path
        try:
            self._route(route, body)
        except ValueError as err: # bad parameters
            self._json(400, dict(error=str(err)))

    def _route(self, route: str, body: Dict[str, Any]) -> None:
        v, r = self.viewer, self.viewer.renderer
        if route == '/api/load':
            path = str(body.get('network') or '').strip()
            ticket = v.load(path)
            ticket.done.wait(v.timeout)
            if ticket.error is not None:
                return self._json(400, dict(error=f'Cannot load network: {ticket.error}', info=v.info()))
            return self._json(200, v.info())
        if route not in ('/api/render', '/api/save_image', '/api/export_mesh'):
            return self._json(404, dict(error=f'not found: {route}'))
        p = parse_params(body)
        if route == '/api/render':
            code, err, res = v.run(lambda: r.render(p), latest_wins=True)
            if code != 200:
                return self._json(code, dict(err, request=body.get('request')))
            png = res['png']
            payload = {k: val for k, val in res.items() if k != 'png'}
            payload.update(request=body.get('request'), image='data:image/png;base64,' + base64.b64encode(png).decode())
            return self._json(200, payload)
        if route == '/api/save_image':
            code, err, res = v.run(lambda: r.save_image(p))
        else:
            code, err, res = v.run(lambda: r.export_mesh(p, int(body.get('mesh_res', 128))))
        if code != 200:
            logger.error('%s failed: %s', route, err['error'])
        else:
            logger.info('%s: wrote %s', route, res['path'])
        self._json(code, err if code != 200 else res)

#----------------------------------------------------------------------------
