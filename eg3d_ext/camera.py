"""3DGP "ball-in-sphere" camera model: priors over (yaw, pitch, roll, fov, radius, look-at) and conversion to EG3D c25."""

import json
import math
import os
import zipfile
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch_utils import persistence

# Pickle-compat: this module is embedded in network pickles (CameraPrior is persistent), so it imports only
# torch, numpy and torch_utils.

#----------------------------------------------------------------------------
# Raw camera vector layout (3DGP `unroll_camera_params` order).

PARAM_NAMES = ('yaw', 'pitch', 'roll', 'fov', 'radius', 'la_yaw', 'la_pitch', 'la_radius')
NUM_PARAMS = len(PARAM_NAMES)
IDX = {name: i for i, name in enumerate(PARAM_NAMES)}

#----------------------------------------------------------------------------
# Prior definitions (spec 3dgp-reference 2.2). Each entry: (dist, a, b) where dist is
#   'uniform' a..b | 'const' a | 'normal' mean a, std b (clipped to the box) | 'sphere_pitch' arccos(1-2v) on [a, b] |
#   'custom' yaw/pitch drawn from a table of dataset angles.
# `box` is the support of the posterior (the camera generator squashes into it).

def _uniform_prior(fov: Tuple[float, float] = (10.0, 45.0), la_radius_max: float = 0.2) -> dict:
    return dict(
        dists=dict(yaw=('uniform', -1.57, 1.57), pitch=('uniform', math.pi / 4, 3 * math.pi / 4), roll=('const', 0.0, 0.0),
                   fov=('uniform', fov[0], fov[1]), radius=('const', 1.0, 1.0), la_yaw=('uniform', -math.pi, math.pi),
                   la_pitch=('sphere_pitch', 0.0, math.pi), la_radius=('uniform', 0.0, la_radius_max)),
        box=dict(yaw=(-1.57, 1.57), pitch=(math.pi / 4, 3 * math.pi / 4), roll=(0.0, 0.0), fov=(fov[0], fov[1]),
                 radius=(1.0, 1.0), la_yaw=(-math.pi, math.pi), la_pitch=(0.0, math.pi), la_radius=(0.0, la_radius_max)),
        ray_start=0.75, ray_end=1.25, cube_scale=0.5)

def get_prior_config(name: str) -> dict:
    """Named prior configurations. 'uniform' = 3DGP default (wide); 'narrow' = README's more stable variant;
    'epigraf' = EpiGRAF's near-frontal prior; 'custom' = yaw/pitch from dataset cameras, rest as 'uniform'."""
    if name == 'uniform':
        return _uniform_prior()
    if name == 'narrow':
        cfg = _uniform_prior(fov=(10.0, 21.0))
        cfg['cube_scale'] = 0.35
        return cfg
    if name == 'epigraf':
        cfg = _uniform_prior(fov=(12.0, 12.0), la_radius_max=0.0)
        cfg['dists'].update(yaw=('normal', 0.0, 0.6), pitch=('normal', math.pi / 2, 0.3), la_radius=('const', 0.0, 0.0))
        cfg['box'].update(yaw=(-math.pi / 2, math.pi / 2), pitch=(math.pi / 8, 7 * math.pi / 8))
        cfg.update(ray_start=0.88, ray_end=1.12, cube_scale=0.2)
        return cfg
    if name == 'custom':
        cfg = _uniform_prior()
        cfg['dists'].update(yaw=('custom', 0.0, 0.0), pitch=('custom', 0.0, 0.0))
        return cfg
    raise ValueError(f'Unknown camera prior {name!r}; valid: uniform, narrow, epigraf, custom')

PRIOR_NAMES = ('uniform', 'narrow', 'epigraf', 'custom')

#----------------------------------------------------------------------------
# Geometry (spec 2.1, 2.3).

def spherical_to_cartesian(yaw: torch.Tensor, pitch: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """y-up spherical coordinates: yaw=0, pitch=pi/2 is on +z."""
    x = radius * torch.sin(pitch) * torch.sin(-yaw)
    y = radius * torch.cos(pitch)
    z = radius * torch.sin(pitch) * torch.cos(yaw)
    return torch.stack([x, y, z], dim=-1)

def _normalize(v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(eps)

def params_to_cam2world_opencv(params: torch.Tensor) -> torch.Tensor:
    """[N, 8] raw camera params -> [N, 4, 4] OpenCV cam2world (x right, y down, z forward), world y-up.
    3DGP builds the OpenGL rotation [-l, u, -f]; OpenCV flips the y and z axes: [-l, -u, f]."""
    origin = spherical_to_cartesian(params[:, IDX['yaw']], params[:, IDX['pitch']], params[:, IDX['radius']])
    look_at = spherical_to_cartesian(params[:, IDX['la_yaw']], params[:, IDX['la_pitch']], params[:, IDX['la_radius']])
    forward = _normalize(look_at - origin)
    up0 = torch.tensor([0.0, 1.0, 0.0], dtype=params.dtype, device=params.device).expand_as(forward)
    left = _normalize(torch.cross(up0, forward, dim=-1))
    up = _normalize(torch.cross(forward, left, dim=-1))
    rot = torch.stack([-left, -up, forward], dim=-1) # columns
    c2w = torch.zeros(params.shape[0], 4, 4, dtype=params.dtype, device=params.device)
    c2w[:, :3, :3] = rot
    c2w[:, :3, 3] = origin
    c2w[:, 3, 3] = 1
    return c2w

def fov_to_normalized_focal(fov_deg: torch.Tensor) -> torch.Tensor:
    """Full fov in degrees -> focal length in units of the image size (image spans [-tan, tan] corner to corner)."""
    return 1.0 / (2.0 * torch.tan(fov_deg * (math.pi / 360.0)))

def params_to_c25(params: torch.Tensor) -> torch.Tensor:
    """[N, 8] raw camera params -> [N, 25] EG3D label (16 cam2world row-major + 9 normalised intrinsics)."""
    c2w = params_to_cam2world_opencv(params)
    f = fov_to_normalized_focal(params[:, IDX['fov']])
    K = torch.zeros(params.shape[0], 3, 3, dtype=params.dtype, device=params.device)
    K[:, 0, 0] = f
    K[:, 1, 1] = f
    K[:, 0, 2] = 0.5
    K[:, 1, 2] = 0.5
    K[:, 2, 2] = 1
    return torch.cat([c2w.reshape(-1, 16), K.reshape(-1, 9)], dim=1)

def c25_to_params(c25: torch.Tensor, look_at_point: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Inverse of params_to_c25 for yaw, pitch, radius and fov (look-at given or the origin; roll 0)."""
    c2w = c25[:, :16].reshape(-1, 4, 4)
    origin = c2w[:, :3, 3]
    radius = origin.norm(dim=-1).clamp_min(1e-8)
    pitch = torch.acos((origin[:, 1] / radius).clamp(-1, 1))
    yaw = torch.atan2(-origin[:, 0], origin[:, 2])
    fov = 2 * torch.atan(1.0 / (2 * c25[:, 16])) * (180 / math.pi)
    out = torch.zeros(c25.shape[0], NUM_PARAMS, dtype=c25.dtype, device=c25.device)
    out[:, IDX['yaw']], out[:, IDX['pitch']], out[:, IDX['radius']], out[:, IDX['fov']] = yaw, pitch, radius, fov
    if look_at_point is not None:
        r = look_at_point.norm(dim=-1)
        out[:, IDX['la_radius']] = r
        out[:, IDX['la_pitch']] = torch.acos((look_at_point[:, 1] / r.clamp_min(1e-8)).clamp(-1, 1))
        out[:, IDX['la_yaw']] = torch.atan2(-look_at_point[:, 0], look_at_point[:, 2])
    return out

#----------------------------------------------------------------------------

@persistence.persistent_class
class CameraPrior(torch.nn.Module):
    """Samples raw camera params [N, 8] from a prior and converts them to EG3D c25 (no trainable parameters)."""

    def __init__(self,
        name:          str = 'uniform', # Named prior, see get_prior_config().
        overrides:     Optional[Dict[str, tuple]] = None, # {param: (dist, a, b)} replacing dists (box follows uniform ones).
        custom_angles: Optional[np.ndarray] = None,       # [K, 2] yaw/pitch table for the 'custom' prior.
    ):
        super().__init__()
        cfg = get_prior_config(name)
        self.name = name
        self.dists = dict(cfg['dists'])
        self.box = dict(cfg['box'])
        for key, spec in (overrides or {}).items():
            if key not in IDX:
                raise ValueError(f'Unknown camera parameter {key!r} in prior overrides; valid: {PARAM_NAMES}')
            self.dists[key] = tuple(spec)
            if spec[0] == 'uniform':
                self.box[key] = (float(spec[1]), float(spec[2]))
            elif spec[0] == 'const':
                self.box[key] = (float(spec[1]), float(spec[1]))
        self.ray_start, self.ray_end, self.cube_scale = cfg['ray_start'], cfg['ray_end'], cfg['cube_scale']
        angles = np.zeros([0, 2], np.float32) if custom_angles is None else np.asarray(custom_angles, np.float32)
        if name == 'custom' and angles.shape[0] == 0:
            raise ValueError('camera prior "custom" needs a table of dataset yaw/pitch angles (none given)')
        if angles.ndim != 2 or angles.shape[1] != 2:
            raise ValueError(f'custom camera angles must have shape [K, 2] (yaw, pitch), got {list(angles.shape)}')
        self.register_buffer('custom_angles', torch.from_numpy(angles.copy()))

    def bounds(self) -> Dict[str, Tuple[float, float]]:
        return dict(self.box)

    def mean_angles(self) -> torch.Tensor:
        """Prior mean of (yaw, pitch, roll) used by mean forcing: interval midpoints (3DGP) or custom table mean."""
        if self.dists['yaw'][0] == 'custom' and self.custom_angles.shape[0] > 0:
            m = self.custom_angles.mean(dim=0)
            return torch.stack([m[0], m[1], torch.zeros_like(m[0])])
        mids = []
        for key in ('yaw', 'pitch', 'roll'):
            dist, a, b = self.dists[key]
            mids.append(a if dist in ('const', 'normal') else (self.box[key][0] + self.box[key][1]) / 2)
        return torch.tensor(mids, dtype=torch.float32, device=self.custom_angles.device)

    def sample(self, batch_size: int, device: Optional[torch.device] = None,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Draw [batch_size, 8] raw camera params."""
        device = self.custom_angles.device if device is None else torch.device(device)
        rand = lambda: torch.rand([batch_size], device=device, generator=generator)
        out = torch.zeros(batch_size, NUM_PARAMS, device=device)
        custom_rows = None
        for key in PARAM_NAMES:
            dist, a, b = self.dists[key]
            if dist == 'uniform':
                v = a + (b - a) * rand()
            elif dist == 'const':
                v = torch.full([batch_size], float(a), device=device)
            elif dist == 'normal':
                lo, hi = self.box[key]
                v = (a + b * torch.randn([batch_size], device=device, generator=generator)).clamp(lo, hi)
            elif dist == 'sphere_pitch': # uniform direction on the sphere
                v = torch.acos(1 - 2 * rand().clamp(1e-5, 1 - 1e-5))
            elif dist == 'custom':
                if custom_rows is None:
                    idx = torch.randint(self.custom_angles.shape[0], [batch_size], device=device, generator=generator)
                    custom_rows = self.custom_angles.to(device)[idx]
                v = custom_rows[:, 0 if key == 'yaw' else 1]
            else:
                raise ValueError(f'Unknown camera distribution {dist!r} for {key}')
            out[:, IDX[key]] = v
        out[:, IDX['pitch']] = out[:, IDX['pitch']].clamp(1e-5, math.pi - 1e-5)
        return out

    def to_c25(self, params: torch.Tensor) -> torch.Tensor:
        return params_to_c25(params)

    def forward(self, batch_size: int, device: Optional[torch.device] = None) -> torch.Tensor:
        return self.sample(batch_size, device)

#----------------------------------------------------------------------------

def _camera_row(value: Any) -> Any:
    """One dataset.json camera entry as numbers: a {"c": c25, ...} or {"yaw", "pitch", ...} dict, or a plain list."""
    if isinstance(value, dict):
        if 'c' in value:
            return value['c']
        if 'yaw' in value and 'pitch' in value:
            return [value['yaw'], value['pitch']]
        raise ValueError(f'camera entry has neither "c" nor "yaw"/"pitch": {sorted(value)}')
    return value

def _camera_table(meta: dict, path: str) -> list:
    """The per-image camera rows of dataset.json: "camera_angles", "cameras", or EG3D's 25-float "labels"."""
    for key in ('camera_angles', 'cameras', 'labels'):
        table = meta.get(key)
        if not table:
            continue
        rows = list(table.values()) if isinstance(table, dict) else [r[1] if len(r) == 2 and isinstance(r[0], str) else r for r in table]
        rows = [_camera_row(r) for r in rows]
        if key != 'labels' or all(isinstance(r, (list, tuple)) and len(r) == 25 for r in rows):
            return rows
    raise IOError(f'{path}: dataset.json has no "cameras", "camera_angles" or 25-float camera "labels" for the custom camera prior')

def load_custom_angles(path: str) -> np.ndarray:
    """Read a [K, 2] yaw/pitch table for the 'custom' prior from a .npy ([K,2] angles or [K,25] c25 cameras) or
    from dataset.json inside a dataset zip or directory ("cameras"/"camera_angles" rows, or EG3D camera labels)."""
    if path.endswith('.npy'):
        arr = np.load(path)
    else:
        if os.path.isdir(path):
            with open(os.path.join(path, 'dataset.json'), 'r') as f:
                meta = json.load(f)
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith('dataset.json')]
                if not names:
                    raise IOError(f'{path}: no dataset.json inside; the custom camera prior needs camera labels')
                meta = json.loads(z.read(names[0]))
        else:
            raise IOError(f'Cannot read custom camera angles from {path!r} (expected .npy, dataset zip or directory)')
        try:
            arr = np.asarray(_camera_table(meta, path), dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise ValueError(f'{path}: cannot read the camera table in dataset.json: {err}') from err
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 2 and arr.shape[1] == 25:
        arr = c25_to_params(torch.from_numpy(arr)).numpy()[:, [IDX['yaw'], IDX['pitch']]]
    elif arr.ndim == 2 and arr.shape[1] >= 2:
        arr = arr[:, :2]
    else:
        raise ValueError(f'custom camera table must be [K, 2] angles or [K, 25] cameras, got shape {list(arr.shape)}')
    return arr

#----------------------------------------------------------------------------
