"""`src.training.rendering_utils` of 3DGP pickles: ball-in-sphere cameras, camera-to-world matrices and rays
(3dgp-reference.md 2.1-2.3, 1.7). Camera params: angles [B,3] (yaw, pitch, roll), fov [B] (degrees), radius [B],
look_at [B,3] (yaw, pitch, radius of the look-at point)."""

import math
from typing import Any, Dict, Optional, Tuple, Union

import torch

from .dnnlib import TensorGroup

#----------------------------------------------------------------------------

def normalize(x: torch.Tensor, dim: int = -1, eps: float = 1e-12) -> torch.Tensor:
    return x / x.norm(dim=dim, keepdim=True).clamp_min(eps)

def spherical2cartesian(yaw: torch.Tensor, pitch: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """y up: x = r sin(pitch) sin(-yaw), y = r cos(pitch), z = r sin(pitch) cos(yaw) -> [B, 3]."""
    return torch.stack([radius * pitch.sin() * (-yaw).sin(), radius * pitch.cos(), radius * pitch.sin() * yaw.cos()], dim=-1)

def compute_cam2world_matrix(camera_params: Dict[str, torch.Tensor]) -> torch.Tensor:
    """[B,4,4] OpenGL camera-to-world (camera looks along its -z): rotation columns [-l, u, -f], translation o."""
    angles, look_at = camera_params['angles'], camera_params['look_at']
    origin = spherical2cartesian(angles[:, 0], angles[:, 1], camera_params['radius'])
    target = spherical2cartesian(look_at[:, 0], look_at[:, 1], look_at[:, 2])
    forward = normalize(target - origin)
    up0 = torch.tensor([0.0, 1.0, 0.0], dtype=origin.dtype, device=origin.device).expand_as(forward)
    left = normalize(torch.cross(up0, forward, dim=-1))
    up = normalize(torch.cross(forward, left, dim=-1))
    c2w = torch.eye(4, dtype=origin.dtype, device=origin.device).repeat(origin.shape[0], 1, 1)
    c2w[:, :3, :3] = torch.stack([-left, up, -forward], dim=-1)
    c2w[:, :3, 3] = origin
    return c2w

def sample_rays(cam2world: torch.Tensor, fov: Union[float, torch.Tensor], resolution: Union[int, Tuple[int, int]],
                patch_params: Optional[Dict[str, torch.Tensor]] = None,
                device: Any = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """3DGP's signature and output order: (ray_o_world, ray_d_world), each [B, H*W, 3] (unit directions), pixels
    row-major; resolution is (W, H) or an int. Pixel (i, j) has u = -1 + 2j/(W-1), v = 1 - 2i/(H-1); a patch
    (scales s, offsets o) maps them to (u+1)s - 1 + 2o; the camera-space direction is normalize(u, v, -1/tan(fov/2)),
    fov in degrees. `device` is accepted for the callers that pass it; the rays live on cam2world's device."""
    W, H = (resolution, resolution) if isinstance(resolution, int) else resolution
    B, dev, dt = cam2world.shape[0], cam2world.device, cam2world.dtype
    v, u = torch.meshgrid(torch.linspace(1, -1, H, device=dev, dtype=dt), torch.linspace(-1, 1, W, device=dev, dtype=dt), indexing='ij')
    u, v = u.reshape(1, -1).expand(B, -1), v.reshape(1, -1).expand(B, -1)
    if patch_params is not None:
        s, o = patch_params['scales'].to(dt), patch_params['offsets'].to(dt)
        u = (u + 1) * s[:, 0:1] - 1 + 2 * o[:, 0:1]
        v = (v + 1) * s[:, 1:2] - 1 + 2 * o[:, 1:2]
    fov = torch.as_tensor(fov, dtype=dt, device=dev).reshape(-1).expand(B)
    z = -1 / torch.tan(fov * (math.pi / 360))[:, None].expand_as(u)
    d_cam = normalize(torch.stack([u, v, z], dim=-1))
    ray_d = torch.bmm(d_cam, cam2world[:, :3, :3].transpose(1, 2))
    ray_o = cam2world[:, None, :3, 3].expand_as(ray_d)
    return ray_o, ray_d

#----------------------------------------------------------------------------
# Prior sampling from a 3DGP camera config node (configs/camera/*.yaml layout: origin.{angles,radius}, fov,
# look_at.{angles,radius}; each leaf has dist and min/max/mean/std).

def _sample(spec: Any, n: int, device: Any) -> torch.Tensor:
    get = lambda k, d=0.0: float(spec.get(k, d)) if spec.get(k, None) is not None else d
    dist = spec.get('dist', 'uniform')
    if dist == 'uniform':
        return torch.rand(n, device=device) * (get('max') - get('min')) + get('min')
    if dist == 'normal':
        return torch.randn(n, device=device) * get('std') + get('mean')
    if dist == 'truncnorm':
        lo, hi = get('min'), get('max')
        return (torch.randn(n, device=device) * get('std') + get('mean', (lo + hi) / 2)).clamp(lo, hi)
    raise ValueError(f'sample_camera_params: unsupported distribution {dist!r}')

def _sample_angles(spec: Any, n: int, device: Any, origin: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    dist = spec.get('dist', 'uniform')
    if dist == 'spherical_uniform':
        yaw = torch.rand(n, device=device) * (spec.yaw.max - spec.yaw.min) + spec.yaw.min
        pitch = torch.acos(1 - 2 * torch.rand(n, device=device).clamp(1e-5, 1 - 1e-5))
        return yaw, pitch
    yaw_spec, pitch_spec = dict(spec.yaw, dist=dist), dict(spec.pitch, dist=dist)
    if dist == 'truncnorm' and origin: # 3DGP quirk: origin angles use the interval midpoint, not the mean
        yaw_spec['mean'] = (yaw_spec['min'] + yaw_spec['max']) / 2
        pitch_spec['mean'] = (pitch_spec['min'] + pitch_spec['max']) / 2
    return _sample(yaw_spec, n, device), _sample(pitch_spec, n, device).clamp(1e-5, math.pi - 1e-5)

def sample_camera_params(cfg: Any, batch_size: int, device: Any = 'cpu',
                         origin_angles: Optional[torch.Tensor] = None) -> TensorGroup:
    """Prior cameras: TensorGroup(angles [B,3] (roll 0), fov [B], radius [B], look_at [B,3]); origin_angles [B,3]
    replaces the sampled origin angles (3DGP's signature)."""
    if origin_angles is None:
        yaw, pitch = _sample_angles(cfg.origin.angles, batch_size, device, origin=True)
        origin_angles = torch.stack([yaw, pitch, torch.zeros_like(yaw)], dim=1)
    la_yaw, la_pitch = _sample_angles(cfg.look_at.angles, batch_size, device, origin=False)
    return TensorGroup(
        angles=origin_angles,
        fov=_sample(cfg.fov, batch_size, device),
        radius=_sample(cfg.origin.radius, batch_size, device),
        look_at=torch.stack([la_yaw, la_pitch, _sample(cfg.look_at.radius, batch_size, device)], dim=1))

#----------------------------------------------------------------------------
