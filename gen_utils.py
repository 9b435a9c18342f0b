"""Drive EG3D and 3DGP generators the same way: loading, cameras, conditioning, rendering and image conversion."""

import math
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

import dnnlib

# Two generator families are supported:
#   EG3D   G(z, c25) -> dict(image, image_raw, image_depth); c25 both conditions the mapping and places the camera
#          (training/triplane.py TriPlaneGenerator).
#   3DGP   G.learns_camera = True; G(z, c_class, camera_params=None|[N,25], camera_mode='learned'|'prior')
#          (eg3d_ext/generator.py Generator; released 3DGP / EpiGRAF pickles get the same interface on loading,
#          eg3d_ext/compat/generator.py LegacyGenerator).
# Plain 2D StyleGAN generators (returning a tensor) are accepted by generate() for the image metrics.

EG3D_DEFAULT_FOV = 18.837   # degrees, EG3D's FFHQ value (gen_samples --fov-deg), in EG3D's FOV_to_intrinsics convention.
EG3D_DEFAULT_RADIUS = 2.7   # EG3D's fallback when rendering_kwargs lacks avg_camera_radius.

#----------------------------------------------------------------------------
# Command-line parsing helpers shared by the CLIs.

def parse_range(s: Union[str, List[int]]) -> List[int]:
    """Parse '1,2,5-10' into [1, 2, 5, 6, 7, 8, 9, 10]."""
    if isinstance(s, list):
        return s
    out = []
    for part in str(s).split(','):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r'(-?\d+)-(-?\d+)', part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ValueError(f'Bad range {part!r}: end is smaller than start')
            out.extend(range(lo, hi + 1))
        elif re.fullmatch(r'-?\d+', part):
            out.append(int(part))
        else:
            raise ValueError(f'Cannot parse {part!r} as an integer or a range like 5-10')
    if not out:
        raise ValueError(f'Empty list: {s!r}')
    return out

def parse_grid(s: Union[str, Tuple[int, int]]) -> Tuple[int, int]:
    """Parse 'WxH' (or 'W,H') into (W, H)."""
    if isinstance(s, tuple):
        return s
    m = re.fullmatch(r'\s*(\d+)\s*[x,]\s*(\d+)\s*', str(s))
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise ValueError(f'Cannot parse {s!r} as a grid size WxH, e.g. 2x2')
    return int(m.group(1)), int(m.group(2))

#----------------------------------------------------------------------------
# Loading and introspection.

def load_generator(network_pkl: str, device: Union[str, torch.device] = 'cpu') -> torch.nn.Module:
    """Load G_ema from an EG3D / SG2 / SG3 / 3DGP pickle or a weights-only .safetensors (path or URL) via legacy.load_network."""
    import legacy # top-level module of this repo; imported lazily so that gen_utils stays light.
    data = legacy.load_network(network_pkl)
    G = data.get('G_ema', None) if isinstance(data, dict) else None
    if G is None:
        raise ValueError(f'{network_pkl}: the pickle holds no G_ema network')
    return G.eval().requires_grad_(False).to(device)

def cli_load_3d_generator(network_pkl: str, device: str = 'auto') -> Tuple[torch.nn.Module, torch.device]:
    """The CLIs' --network/--device handling: resolve 'auto'|'cuda'|'cpu', load G_ema, insist on a 3D generator.
    Problems become click.ClickException so that the tools print one clear line."""
    import click # lazily, like legacy: only the CLIs need it
    dev = torch.device('cuda' if device == 'cuda' or (device == 'auto' and torch.cuda.is_available()) else 'cpu')
    print(f'Loading networks from "{network_pkl}"...')
    try:
        G = load_generator(network_pkl, dev)
    except (IOError, OSError, ValueError) as err:
        raise click.ClickException(f'Cannot load --network {network_pkl}: {err}')
    if not is_3d(G):
        raise click.ClickException(f'{type(G).__name__} is not a 3D generator (EG3D or 3DGP)')
    return G, dev

def learns_camera(G: torch.nn.Module) -> bool:
    """True for 3DGP-style generators that sample (and learn) their own cameras."""
    return bool(getattr(G, 'learns_camera', False))

def is_3d(G: torch.nn.Module) -> bool:
    """True for generators that render (EG3D tri-plane or 3DGP); False for 2D StyleGAN generators."""
    return learns_camera(G) or hasattr(G, 'rendering_kwargs')

def rendering_kwargs(G: torch.nn.Module) -> Dict[str, Any]:
    """A copy of G.rendering_kwargs (ray_start/ray_end, box_warp, avg_camera_* ...); {} for 2D generators."""
    return dict(getattr(G, 'rendering_kwargs', None) or {})

def depth_range(G: torch.nn.Module) -> Optional[Tuple[float, float]]:
    """(near, far) of the rendered rays, or None when the generator picks them per ray ('auto')."""
    rk = rendering_kwargs(G)
    near, far = rk.get('ray_start', getattr(G, 'ray_start', None)), rk.get('ray_end', getattr(G, 'ray_end', None))
    if isinstance(near, (int, float)) and isinstance(far, (int, float)) and far > near:
        return float(near), float(far)
    return None

def camera_defaults(G: torch.nn.Module) -> dnnlib.EasyDict:
    """Canonical camera of a generator: look-at pivot, orbit radius and field of view (degrees).

    EG3D: avg_camera_pivot / avg_camera_radius from rendering_kwargs, fov 18.837 (EG3D intrinsics convention).
    3DGP: the same keys when present, else pivot 0 and radius 1 (spec 2.2); fov from `avg_camera_fov` or 27.5
    (middle of the 10-45 degree prior), in the true pinhole convention.
    """
    rk = rendering_kwargs(G)
    if learns_camera(G):
        fov = rk.get('avg_camera_fov', getattr(G, 'avg_camera_fov', 27.5))
        radius = rk.get('avg_camera_radius', 1.0)
    else:
        fov = rk.get('avg_camera_fov', EG3D_DEFAULT_FOV)
        radius = rk.get('avg_camera_radius', EG3D_DEFAULT_RADIUS)
    pivot = [float(v) for v in rk.get('avg_camera_pivot', [0, 0, 0])]
    return dnnlib.EasyDict(pivot=pivot, radius=float(radius), fov=float(fov))

#----------------------------------------------------------------------------
# Cameras (EG3D c25: 16 OpenCV cam2world, row-major, + 9 normalised intrinsics).

def intrinsics(G: torch.nn.Module, fov_deg: float, device: Union[str, torch.device] = 'cpu') -> torch.Tensor:
    """[3,3] normalised intrinsics for a field of view in degrees, in the convention the generator was trained in:
    EG3D's FOV_to_intrinsics (rounded constants) for EG3D nets, the exact pinhole f = 1/(2 tan(fov/2)) for 3DGP."""
    if learns_camera(G):
        f = 1.0 / (2.0 * math.tan(math.radians(fov_deg) / 2))
        return torch.tensor([[f, 0, 0.5], [0, f, 0.5], [0, 0, 1]], dtype=torch.float32, device=device)
    import camera_utils
    return camera_utils.FOV_to_intrinsics(fov_deg, device=device)

def lookat_cameras(G: torch.nn.Module, yaw: Sequence[float], pitch: Sequence[float], fov_deg: Optional[float] = None,
                   radius: Optional[float] = None, device: Union[str, torch.device] = 'cpu') -> torch.Tensor:
    """c25 cameras [N, 25] orbiting the generator's pivot. yaw/pitch are offsets in radians from the frontal view
    (EG3D's LookAtPoseSampler angles minus pi/2; pitch > 0 moves the camera below the pivot)."""
    import camera_utils
    d = camera_defaults(G)
    fov_deg = d.fov if fov_deg is None else float(fov_deg)
    radius = d.radius if radius is None else float(radius)
    pivot = torch.tensor(d.pivot, dtype=torch.float32, device=device)
    K = intrinsics(G, fov_deg, device=device).reshape(1, 9)
    cams = []
    for y, p in zip(np.broadcast_to(yaw, np.broadcast(yaw, pitch).shape).ravel(),
                    np.broadcast_to(pitch, np.broadcast(yaw, pitch).shape).ravel()):
        c2w = camera_utils.LookAtPoseSampler.sample(math.pi / 2 + float(y), math.pi / 2 + float(p), pivot,
                                                    radius=radius, device=device)
        cams.append(torch.cat([c2w.reshape(-1, 16).to(torch.float32), K], dim=1))
    return torch.cat(cams, dim=0)

def frontal_camera(G: torch.nn.Module, batch_size: int = 1, device: Union[str, torch.device] = 'cpu') -> torch.Tensor:
    """The canonical frontal camera, repeated: EG3D's conditioning camera for gen_samples / gen_videos."""
    return lookat_cameras(G, [0.0], [0.0], device=device).repeat(batch_size, 1)

def prior_cameras(G: torch.nn.Module, batch_size: int, rng: np.random.RandomState,
                  device: Union[str, torch.device] = 'cpu') -> torch.Tensor:
    """Random cameras for an EG3D net that has no camera distribution of its own: Gaussian yaw/pitch around the
    frontal view (std 0.3 / 0.155 rad, EG3D's FFHQ-like spread) at the canonical radius and fov."""
    return lookat_cameras(G, rng.normal(0, 0.3, size=batch_size), rng.normal(0, 0.155, size=batch_size), device=device)

def orbit_trajectory(num_frames: int, yaw_range: float = 0.35, pitch_range: float = 0.25,
                     pitch_offset: float = -0.05) -> Tuple[np.ndarray, np.ndarray]:
    """EG3D gen_videos orbit: yaw = 0.35 sin(2 pi t), pitch = -0.05 + 0.25 cos(2 pi t) (offsets from frontal)."""
    t = np.arange(num_frames) / max(num_frames, 1)
    return yaw_range * np.sin(2 * np.pi * t), pitch_offset + pitch_range * np.cos(2 * np.pi * t)

def yaw_sweep_trajectory(num_frames: int, yaw_range: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
    """3DGP 'line' trajectory: yaw from -range to +range at constant frontal pitch."""
    return np.linspace(-yaw_range, yaw_range, num_frames), np.zeros(num_frames)

def camera_to_params(c25: Union[torch.Tensor, np.ndarray]) -> Dict[str, np.ndarray]:
    """c25 cameras -> dict of per-camera parameters in 3DGP's convention (spec 2.1): yaw (0 = on +z), pitch (polar
    angle from +y), radius, fov (full, degrees, exact pinhole from fx) and lookat (distance of the optical axis from
    the world origin: the look-at point is not recoverable from c25, the axis is)."""
    c = np.asarray(c25.detach().cpu() if torch.is_tensor(c25) else c25, dtype=np.float64).reshape(-1, 25)
    c2w = c[:, :16].reshape(-1, 4, 4)
    origin, forward = c2w[:, :3, 3], c2w[:, :3, 2]
    radius = np.linalg.norm(origin, axis=1)
    pitch = np.arccos(np.clip(origin[:, 1] / np.maximum(radius, 1e-12), -1, 1))
    yaw = np.arctan2(-origin[:, 0], origin[:, 2])
    fov = np.degrees(2 * np.arctan(1.0 / (2 * c[:, 16])))
    f = forward / np.maximum(np.linalg.norm(forward, axis=1, keepdims=True), 1e-12)
    closest = origin - np.sum(origin * f, axis=1, keepdims=True) * f
    return dict(yaw=yaw, pitch=pitch, radius=radius, fov=fov, lookat=np.linalg.norm(closest, axis=1))

#----------------------------------------------------------------------------
# Conditioning and the forward pass.

def class_labels(G: torch.nn.Module, batch_size: int, class_idx: Optional[int] = None,
                 rng: Optional[np.random.RandomState] = None, device: Union[str, torch.device] = 'cpu') -> torch.Tensor:
    """One-hot class labels [N, c_dim] for a 3DGP net (a fixed class, or uniform random ones); [N, 0] if c_dim=0."""
    c_dim = int(getattr(G, 'c_dim', 0))
    c = torch.zeros(batch_size, c_dim, device=device)
    if c_dim == 0:
        if class_idx is not None:
            raise ValueError('--class given, but the generator is unconditional (c_dim = 0)')
        return c
    if class_idx is None:
        idx = (rng or np.random).randint(c_dim, size=batch_size)
    else:
        if not 0 <= class_idx < c_dim:
            raise ValueError(f'--class={class_idx} is out of range: the generator has {c_dim} classes')
        idx = np.full(batch_size, class_idx)
    c[torch.arange(batch_size), torch.as_tensor(idx, device=device)] = 1
    return c

def conditioning(G: torch.nn.Module, batch_size: int, class_idx: Optional[int] = None,
                 rng: Optional[np.random.RandomState] = None, device: Union[str, torch.device] = 'cpu') -> torch.Tensor:
    """The mapping-network input c: class one-hot for 3DGP, the frontal camera for EG3D (as EG3D's scripts do)."""
    if learns_camera(G):
        return class_labels(G, batch_size, class_idx, rng, device)
    if int(getattr(G, 'c_dim', 0)) == 25 and is_3d(G):
        return frontal_camera(G, batch_size, device)
    return torch.zeros(batch_size, int(getattr(G, 'c_dim', 0)), device=device)

def mapping(G: torch.nn.Module, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1,
            truncation_cutoff: Optional[int] = None) -> torch.Tensor:
    """ws from z and the conditioning c (see conditioning())."""
    return G.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)

def generate(G: torch.nn.Module, z: torch.Tensor, c: Optional[torch.Tensor] = None, camera: Optional[torch.Tensor] = None,
             camera_mode: str = 'learned', ws: Optional[torch.Tensor] = None, **G_kwargs: Any) -> Dict[str, torch.Tensor]:
    """One forward pass, returning a dict with at least 'image' (and 'image_depth', 'camera_params' when known).

    EG3D: c = conditioning camera (default: frontal) and camera = render camera (default: c). With both equal this
          is exactly `G(z, c)` as in EG3D's metrics; otherwise mapping(c) + synthesis(camera).
    3DGP: c = class one-hot; camera = fixed c25 cameras, or None to let G sample them ('learned' = prior through the
          camera generator, 'prior' = the prior itself).
    ws:   precomputed mapping output (reused across frames); z is then ignored (3DGP: only with a given camera).
    """
    if learns_camera(G):
        if c is None:
            c = class_labels(G, z.shape[0], device=z.device)
        if ws is not None and camera is not None:
            return _as_dict(G.synthesis(ws, camera, **G_kwargs), camera)
        return _as_dict(G(z, c, camera_params=camera, camera_mode=camera_mode, **G_kwargs), camera)
    if not is_3d(G):
        if c is None:
            c = torch.zeros(z.shape[0], int(getattr(G, 'c_dim', 0)), device=z.device)
        return _as_dict(G(z, c, **G_kwargs), None)
    if c is None:
        c = frontal_camera(G, z.shape[0], z.device)
    if camera is None:
        camera = c
    if ws is None and camera is c:
        return _as_dict(G(z, c, **G_kwargs), camera)
    psi = G_kwargs.pop('truncation_psi', 1)
    cutoff = G_kwargs.pop('truncation_cutoff', None)
    if ws is None:
        ws = mapping(G, z, c, psi, cutoff)
    return _as_dict(G.synthesis(ws, camera, **G_kwargs), camera)

def sample_cameras(G: torch.nn.Module, z: torch.Tensor, c: Optional[torch.Tensor] = None,
                   camera_mode: str = 'learned') -> torch.Tensor:
    """c25 cameras [N, 25] a 3DGP generator would render z with (its sample_cameras(), else a forward pass)."""
    if not learns_camera(G):
        raise ValueError(f'{type(G).__name__} does not sample its own cameras (no learns_camera attribute)')
    if c is None:
        c = class_labels(G, z.shape[0], device=z.device)
    if hasattr(G, 'sample_cameras'):
        return G.sample_cameras(z, c, camera_mode=camera_mode)[1]
    return G(z, c, camera_mode=camera_mode)['camera_params']

def _as_dict(out: Any, camera: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
    out = dict(image=out) if torch.is_tensor(out) else dict(out)
    if 'camera_params' not in out and camera is not None:
        out['camera_params'] = camera
    return out

def render_views(G: torch.nn.Module, z: torch.Tensor, c: torch.Tensor, yaws: Sequence[float], pitches: Sequence[float],
                 fov_deg: Optional[float] = None, truncation_psi: float = 1, truncation_cutoff: Optional[int] = None,
                 noise_mode: str = 'const') -> List[Dict[str, torch.Tensor]]:
    """Render the same latent(s) from several orbit cameras (the mapping runs once for EG3D)."""
    ws = mapping(G, z, c, truncation_psi, truncation_cutoff)
    outs = []
    for yaw, pitch in zip(yaws, pitches):
        cam = lookat_cameras(G, [yaw], [pitch], fov_deg=fov_deg, device=z.device).repeat(z.shape[0], 1)
        outs.append(generate(G, z, c, camera=cam, ws=ws, noise_mode=noise_mode))
    return outs

#----------------------------------------------------------------------------
# Image conversion.

def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[N,C,H,W] in [-1,1] -> [N,H,W,C] uint8 (EG3D's x*127.5+128 rounding)."""
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

def normalize_depth(depth: torch.Tensor, near_far: Optional[Tuple[float, float]] = None) -> torch.Tensor:
    """[N,1,H,W] depth -> [0,1] with near = 1 (bright) and far = 0, per image min/max unless near_far is given."""
    d = depth.to(torch.float32)
    if near_far is None:
        lo = d.flatten(1).min(dim=1).values.reshape(-1, 1, 1, 1)
        hi = d.flatten(1).max(dim=1).values.reshape(-1, 1, 1, 1)
    else:
        lo, hi = near_far
    return (1 - (d - lo) / (hi - lo + 1e-8)).clamp(0, 1)

def depth_to_uint16(depth: torch.Tensor, near_far: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """[N,1,H,W] depth -> [N,H,W] uint16 (65535 = nearest)."""
    return (normalize_depth(depth, near_far)[:, 0] * 65535 + 0.5).to(torch.int32).cpu().numpy().astype(np.uint16)

def depth_to_uint8_rgb(depth: torch.Tensor, size: Optional[int] = None,
                       near_far: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """[N,1,H,W] depth -> [N,size,size,3] uint8 grey frames (for videos next to RGB)."""
    d = normalize_depth(depth, near_far)
    if size is not None and d.shape[-1] != size:
        d = torch.nn.functional.interpolate(d, size=(size, size), mode='bilinear', align_corners=False)
    return (d * 255 + 0.5).clamp(0, 255).to(torch.uint8).repeat(1, 3, 1, 1).permute(0, 2, 3, 1).cpu().numpy()

#----------------------------------------------------------------------------
# Density volumes for shapes (spec f.1: G.sample_mixed(coords, dirs, ws)['sigma']).

def sample_density_volume(G: torch.nn.Module, ws: torch.Tensor, resolution: int, cube_size: Optional[float] = None,
                          chunk: int = 2 ** 20) -> Tuple[np.ndarray, float, float]:
    """Raw density of one latent on an exact N^3 lattice over a centred cube (default side: box_warp).

    Returns (volume [x, y, z] float32, voxel_size, origin) where origin is the coordinate of voxel 0 on each axis.
    Unlike EG3D's create_samples (float-division shear, spec f.1) the lattice here is exact.
    """
    if ws.shape[0] != 1:
        raise ValueError('sample_density_volume() takes the ws of a single sample')
    if not hasattr(G, 'sample_mixed'):
        raise ValueError(f'{type(G).__name__} has no sample_mixed(): cannot extract shapes from this generator')
    size = float(cube_size if cube_size is not None else rendering_kwargs(G).get('box_warp', 1.0))
    axis = torch.linspace(-size / 2, size / 2, resolution, device=ws.device)
    coords = torch.stack(torch.meshgrid(axis, axis, axis, indexing='ij'), dim=-1).reshape(1, -1, 3)
    dirs = torch.zeros_like(coords)
    dirs[..., 2] = -1
    sigma = torch.empty(coords.shape[1], device=ws.device)
    for lo in range(0, coords.shape[1], chunk):
        torch.manual_seed(0) # EG3D seeds every chunk so that any density noise is reproducible.
        out = G.sample_mixed(coords[:, lo:lo + chunk], dirs[:, lo:lo + chunk], ws, noise_mode='const')
        sigma[lo:lo + chunk] = out['sigma'].reshape(-1)
    volume = sigma.reshape(resolution, resolution, resolution).cpu().numpy().astype(np.float32)
    return volume, size / (resolution - 1), -size / 2

#----------------------------------------------------------------------------
