"""Viewer back end, independent of the UI: load a network, validate view parameters, render one frame (RGB / depth
views), save images and export meshes."""

import copy
import io
import json
import os
import time
from typing import Any, Dict, Optional

import numpy as np
import PIL.Image
import torch

import dnnlib
import gen_utils
import shape_utils

VIEWS = ('rgb', 'raw', 'depth', 'depth_adapted')   # SR output, neural rendering, depth, 3DGP adapted depth
CAMERA_MODES = ('orbit', 'learned', 'prior')       # interactive orbit, 3DGP learned distribution, camera prior
CPU_MAX_NRR = 64                                   # default neural-rendering resolution cap on CPU (usable speed)

#----------------------------------------------------------------------------
# Loading.

def load_network_data(path: str) -> dict:
    """dict(G_ema, training_set_kwargs, ...) from an EG3D / 3DGP pickle or a .safetensors file (legacy.load_network
    dispatches on the suffix); raises IOError naming the file on any failure."""
    import legacy # top-level module of this repo, imported lazily like gen_utils does
    if not path:
        raise IOError('no network given: enter a .pkl or .safetensors path')
    if not dnnlib.util.is_url(path) and not os.path.isfile(path):
        raise IOError(f'{path}: no such file')
    try:
        data = legacy.load_network(path)
    except (IOError, OSError, ValueError, ImportError, RuntimeError) as err:
        msg = str(err)
        raise IOError(msg if path in msg else f'{path}: {msg}') from err
    if not isinstance(data, dict) or not isinstance(data.get('G_ema'), torch.nn.Module):
        raise IOError(f'{path}: the file holds no G_ema network')
    return data

def _jsonable(obj: Any) -> Any:
    """Round-trip through JSON so that the options panel never fails on odd values (tensors, classes, ...)."""
    return json.loads(json.dumps(obj, default=repr))

def training_options(data: dict, G: torch.nn.Module, path: str) -> Dict[str, Any]:
    """What the pickle says about its training run, plus training_options.json from the run directory if present."""
    opts: Dict[str, Any] = {}
    if data.get('training_set_kwargs') is not None:
        opts['training_set_kwargs'] = data['training_set_kwargs']
    if getattr(G, 'init_kwargs', None) is not None:
        opts['G_init_kwargs'] = G.init_kwargs
    if gen_utils.rendering_kwargs(G):
        opts['rendering_kwargs'] = gen_utils.rendering_kwargs(G)
    json_path = os.path.join(os.path.dirname(os.path.abspath(path)), 'training_options.json')
    if not dnnlib.util.is_url(path) and os.path.isfile(json_path):
        try:
            with open(json_path, 'r', encoding='utf-8') as f:
                opts['training_options.json'] = json.load(f)
        except (OSError, ValueError) as err:
            opts['training_options.json'] = f'unreadable: {err}'
    return _jsonable(opts)

#----------------------------------------------------------------------------
# Parameters coming from the page (untrusted: validate and give clear messages).

def parse_params(d: Dict[str, Any]) -> dnnlib.EasyDict:
    """Page state -> validated render parameters; raises ValueError naming the bad field.

    pose:  the page's orbit camera as a row-major 4x4 OpenCV cam2world (16 floats, EG3D's c25 layout), or None for the
           generator's frontal camera; focal: its normalised focal length (focal / image side), None with pose None.
    """
    def num(key, default, cast=float, lo=None, hi=None, optional=False):
        v = d.get(key, default)
        if v is None or (optional and v == ''):
            if optional:
                return None
            raise ValueError(f'{key} is required')
        try:
            v = cast(v)
        except (TypeError, ValueError):
            raise ValueError(f'{key}={d.get(key)!r} is not a valid {cast.__name__}') from None
        if not np.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ValueError(f'{key}={v} is out of range [{lo}, {hi}]')
        return v
    pose = d.get('pose')
    if pose is not None:
        try:
            pose = tuple(float(v) for v in pose)
        except (TypeError, ValueError):
            raise ValueError(f'pose={pose!r} is not a list of numbers') from None
        if len(pose) != 16 or not np.isfinite(pose).all():
            raise ValueError('pose must be 16 finite numbers (a row-major 4x4 cam2world matrix)')
    p = dnnlib.EasyDict(
        seed=num('seed', 0, int, 0, 2**32 - 1),
        class_idx=num('class_idx', None, int, 0, None, optional=True),
        psi=num('psi', 1.0, float, -2, 2),
        pose=pose,
        focal=num('focal', None, float, 0.05, 100, optional=pose is None),
        nrr=num('nrr', None, int, 4, 1024, optional=True),
        camera=str(d.get('camera', 'orbit')), view=str(d.get('view', 'rgb')))
    if p.camera not in CAMERA_MODES:
        raise ValueError(f'camera={p.camera!r}: expected one of {", ".join(CAMERA_MODES)}')
    if p.view not in VIEWS:
        raise ValueError(f'view={p.view!r}: expected one of {", ".join(VIEWS)}')
    return p

#----------------------------------------------------------------------------

class Renderer:
    """Owns the generator. Not thread-safe: the server calls it from its single render worker thread only."""

    def __init__(self, device: str = 'cpu', outdir: str = 'viewer_out'):
        self.device = torch.device(device)
        self.outdir = outdir
        self.G: Optional[torch.nn.Module] = None
        self.info: Dict[str, Any] = dict(status='empty', network=None)
        self._backbone_key = None   # latent of the cached tri-planes (orbiting reuses them)
        self._last = (None, None)   # (params, result) of the latest frame, for "save image"

    def load(self, path: str) -> Dict[str, Any]:
        """Load a network; on failure the previous one stays loaded and IOError propagates."""
        data = load_network_data(path)
        G = data['G_ema'].eval().requires_grad_(False).to(self.device)
        if not gen_utils.is_3d(G):
            raise IOError(f'{path}: {type(G).__name__} is not a 3D generator (EG3D or 3DGP)')
        nrr = int(getattr(G, 'neural_rendering_resolution', None) or getattr(G, 'img_resolution', 64))
        adaptor = gen_utils.learns_camera(G) and getattr(G, 'depth_adaptor', None) is not None
        frontal = gen_utils.frontal_camera(G)[0].cpu().numpy().astype(np.float64)
        self.G, self._backbone_key, self._last = G, None, (None, None)
        self.info = dict(status='ready', network=path, kind='3DGP' if gen_utils.learns_camera(G) else 'EG3D',
            generator=type(G).__name__, device=str(self.device), z_dim=int(G.z_dim), c_dim=int(G.c_dim),
            num_classes=int(G.c_dim) if gen_utils.learns_camera(G) else 0,
            learns_camera=gen_utils.learns_camera(G), depth_adaptor=adaptor,
            img_resolution=int(getattr(G, 'img_resolution', nrr)), neural_rendering_resolution=nrr,
            default_nrr=min(nrr, CPU_MAX_NRR) if self.device.type == 'cpu' else nrr,
            # The page's starting orbit camera: EG3D's frontal view as cam2world + normalised focal, and its pivot.
            camera=dict(pose=frontal[:16].tolist(), focal=float(frontal[16]), pivot=gen_utils.camera_defaults(G).pivot),
            training_options=training_options(data, G, path))
        return self.info

    def _require_G(self) -> torch.nn.Module:
        if self.G is None:
            raise ValueError('no network is loaded: enter a network path and press Load')
        return self.G

    def _latent(self, p: dnnlib.EasyDict):
        G = self._require_G()
        rng = np.random.RandomState(p.seed)
        z = torch.from_numpy(rng.randn(1, G.z_dim)).to(torch.float32).to(self.device)
        c = gen_utils.conditioning(G, 1, p.class_idx, rng=rng, device=self.device)
        ws = gen_utils.mapping(G, z, c, p.psi)
        return z, c, ws

    def _camera(self, p: dnnlib.EasyDict, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        G = self._require_G()
        if p.camera == 'orbit':
            if p.pose is None:
                return gen_utils.frontal_camera(G, device=self.device)
            K = [p.focal, 0, 0.5, 0, p.focal, 0.5, 0, 0, 1] # normalised pinhole, principal point at the centre
            return torch.tensor([list(p.pose) + K], dtype=torch.float32, device=self.device)
        torch.manual_seed(p.seed) # one fixed camera sample per seed
        if gen_utils.learns_camera(G):
            return gen_utils.sample_cameras(G, z, c, camera_mode=p.camera)
        if p.camera == 'learned':
            raise ValueError('this EG3D generator has no learned camera distribution: use the orbit or prior camera')
        return gen_utils.prior_cameras(G, 1, np.random.RandomState(p.seed), device=self.device)

    @torch.no_grad()
    def render(self, p: dnnlib.EasyDict) -> Dict[str, Any]:
        """One frame -> dict(image [H,W,3] uint8, ms, camera {yaw, pitch, radius, fov} as rendered, note)."""
        if self._last[0] == p:
            return self._last[1]
        G = self._require_G()
        t0 = time.perf_counter()
        z, c, ws = self._latent(p)
        cam = self._camera(p, z, c)
        # Always explicit: EG3D's synthesis() remembers the last resolution it was given (documented EG3D state).
        nrr = p.nrr if p.nrr is not None else self.info['default_nrr']
        kwargs: Dict[str, Any] = dict(noise_mode='const', neural_rendering_resolution=nrr)
        key = (p.seed, p.class_idx, p.psi)
        if key == self._backbone_key: # only the camera or the view changed: reuse the tri-planes
            kwargs['use_cached_backbone'] = True
        else:
            kwargs['cache_backbone'] = True
        self._backbone_key = None # until this render succeeds, the cached tri-planes are of unknown latent
        torch.manual_seed(p.seed) # the renderer jitters its ray samples
        out = gen_utils.generate(G, z, c, camera=cam, ws=ws, **kwargs)
        self._backbone_key = key
        img, note = self._view(out, p.view)
        params = gen_utils.camera_to_params(out.get('camera_params', cam))
        result = dict(image=img, note=note, ms=round((time.perf_counter() - t0) * 1000, 1),
                      camera={k: float(v[0]) for k, v in params.items() if k in ('yaw', 'pitch', 'radius', 'fov')})
        self._last = (copy.deepcopy(p), result)
        return result

    def _view(self, out: Dict[str, torch.Tensor], view: str):
        """The requested view as an [H,W,3] uint8 array (depth: bright = near), plus a note for the page."""
        note = ''
        if view == 'rgb':
            return gen_utils.to_uint8(out['image'][:, :3])[0], note
        if view == 'raw':
            return gen_utils.to_uint8(out.get('image_raw', out['image'])[:, :3])[0], note
        if 'image_depth' not in out:
            raise ValueError('this generator returns no depth')
        if view == 'depth':
            return gen_utils.depth_to_uint8_rgb(out['image_depth'])[0], note
        if 'image_depth_adapted' in out: # [-1, 1] with near = -1 (3DGP depth adaptor)
            return gen_utils.depth_to_uint8_rgb(out['image_depth_adapted'], near_far=(-1.0, 1.0))[0], note
        note = 'no depth adaptor (EG3D): depth normalised by the ray bounds instead'
        return gen_utils.depth_to_uint8_rgb(out['image_depth'], near_far=gen_utils.depth_range(self.G))[0], note

    def _stem(self, p: dnnlib.EasyDict, tag: str) -> str:
        os.makedirs(self.outdir, exist_ok=True)
        name = os.path.splitext(os.path.basename(str(self.info.get('network') or 'net')))[0]
        stem = os.path.join(self.outdir, f'{name}-seed{p.seed:04d}-{tag}-{time.strftime("%Y%m%d-%H%M%S")}')
        unique, k = stem, 1
        while any(f.startswith(os.path.basename(unique) + '.') for f in os.listdir(self.outdir)):
            unique, k = f'{stem}-{k}', k + 1 # several saves within one second must not overwrite each other
        return unique

    def save_image(self, p: dnnlib.EasyDict) -> str:
        """Write the frame for p (the one on screen: cached) as PNG into outdir; returns its absolute path."""
        img = self.render(p)['image']
        path = self._stem(p, p.view) + '.png'
        buf = io.BytesIO()
        PIL.Image.fromarray(img).save(buf, format='png')
        with dnnlib.util.atomic_write(path, 'wb') as f:
            f.write(buf.getvalue())
        return os.path.abspath(path)

    @torch.no_grad()
    def export_mesh(self, p: dnnlib.EasyDict, resolution: int) -> str:
        """Density volume (.mrc) and marching-cubes mesh (.ply, automatic iso-level) of the current latent into
        outdir; returns the absolute path of the .ply (the .mrc lies beside it). Raises ValueError for a resolution
        out of [8, 1024], and when the iso-level crosses no surface: the message names the .mrc written all the same,
        to mesh at another level with shape_utils.py."""
        if not 8 <= int(resolution) <= 1024:
            raise ValueError(f'mesh resolution {resolution} is out of range [8, 1024]')
        _z, _c, ws = self._latent(p)
        stem = self._stem(p, f'mesh{int(resolution)}')
        try:
            shape_utils.export_shape(self._require_G(), ws, int(resolution), None, stem)
        except ValueError as err:
            mrc = os.path.abspath(stem + '.mrc')
            if not os.path.isfile(mrc): # failed before the volume was written: not about the iso-level
                raise
            raise ValueError(f'{err}. The density volume is saved as {mrc}: try another iso-level with '
                             f'`python shape_utils.py {mrc} --level=<level>`') from err
        return os.path.abspath(stem + '.ply')

#----------------------------------------------------------------------------
