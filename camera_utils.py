"""Camera pose samplers and intrinsics in EG3D's conventions (OpenCV cam2world, y-up world, normalised intrinsics).

Pose angles: `horizontal` is the yaw around the world y axis, `vertical` the polar angle from +y (pi/2 = level).
The frontal camera (pi/2, pi/2) sits at (0, 0, r) looking at the origin with rotation diag(1, -1, -1).
"""

import math
import torch
from training.volumetric_rendering import math_utils

#----------------------------------------------------------------------------

def _sphere_origins(h: torch.Tensor, v: torch.Tensor, radius) -> torch.Tensor:
    """Camera centres on a sphere for yaw h [B,1] and polar angle v [B,1] (v mapped through arccos(1 - 2v/pi))."""
    v = torch.clamp(v, 1e-5, math.pi - 1e-5)
    theta = h
    phi = torch.arccos(1 - 2 * (v / math.pi))
    origins = torch.zeros((h.shape[0], 3), device=h.device)
    origins[:, 0:1] = radius * torch.sin(phi) * torch.cos(math.pi - theta)
    origins[:, 2:3] = radius * torch.sin(phi) * torch.sin(math.pi - theta)
    origins[:, 1:2] = radius * torch.cos(phi)
    return origins

class GaussianCameraPoseSampler:
    """Cameras looking at the world origin, angles ~ Normal(mean, stddev). Returns cam2world [B, 4, 4]."""
    @staticmethod
    def sample(horizontal_mean, vertical_mean, horizontal_stddev=0, vertical_stddev=0, radius=1, batch_size=1,
            device='cpu') -> torch.Tensor:
        h = torch.randn((batch_size, 1), device=device) * horizontal_stddev + horizontal_mean
        v = torch.randn((batch_size, 1), device=device) * vertical_stddev + vertical_mean
        origins = _sphere_origins(h, v, radius)
        return create_cam2world_matrix(math_utils.normalize_vecs(-origins), origins)

class LookAtPoseSampler:
    """Cameras on a sphere around the world origin looking at `lookat_position` [3], angles ~ Normal(mean, stddev)."""
    @staticmethod
    def sample(horizontal_mean, vertical_mean, lookat_position, horizontal_stddev=0, vertical_stddev=0, radius=1,
            batch_size=1, device='cpu') -> torch.Tensor:
        h = torch.randn((batch_size, 1), device=device) * horizontal_stddev + horizontal_mean
        v = torch.randn((batch_size, 1), device=device) * vertical_stddev + vertical_mean
        origins = _sphere_origins(h, v, radius)
        return create_cam2world_matrix(math_utils.normalize_vecs(lookat_position - origins), origins)

class UniformCameraPoseSampler:
    """Cameras looking at the world origin, angles ~ Uniform(mean - stddev, mean + stddev)."""
    @staticmethod
    def sample(horizontal_mean, vertical_mean, horizontal_stddev=0, vertical_stddev=0, radius=1, batch_size=1,
            device='cpu') -> torch.Tensor:
        h = (torch.rand((batch_size, 1), device=device) * 2 - 1) * horizontal_stddev + horizontal_mean
        v = (torch.rand((batch_size, 1), device=device) * 2 - 1) * vertical_stddev + vertical_mean
        origins = _sphere_origins(h, v, radius)
        return create_cam2world_matrix(math_utils.normalize_vecs(-origins), origins)

#----------------------------------------------------------------------------

def create_cam2world_matrix(forward_vector: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
    """OpenCV cam2world [B, 4, 4] for viewing directions [B, 3] and camera centres [B, 3] (world up = +y).

    Columns: right = -normalize(up x forward), up' = normalize(forward x right), forward; translation = origin.
    """
    forward_vector = math_utils.normalize_vecs(forward_vector)
    up_vector = torch.tensor([0, 1, 0], dtype=torch.float, device=origin.device).expand_as(forward_vector)
    right_vector = -math_utils.normalize_vecs(torch.cross(up_vector, forward_vector, dim=-1))
    up_vector = math_utils.normalize_vecs(torch.cross(forward_vector, right_vector, dim=-1))
    cam2world = torch.eye(4, device=origin.device).unsqueeze(0).repeat(forward_vector.shape[0], 1, 1)
    cam2world[:, :3, :3] = torch.stack((right_vector, up_vector, forward_vector), dim=-1)
    cam2world[:, :3, 3] = origin
    return cam2world

def FOV_to_intrinsics(fov_degrees: float, device='cpu') -> torch.Tensor:
    """Normalised 3x3 intrinsics for a vertical FOV in degrees, principal point at the centre.

    Uses EG3D's rounded constants (pi ~ 3.14159, sqrt(2) ~ 1.414), so e.g. 18.837 deg -> focal 4.2634, which matches
    the released FFHQ labels.
    """
    focal_length = float(1 / (math.tan(fov_degrees * 3.14159 / 360) * 1.414))
    return torch.tensor([[focal_length, 0, 0.5], [0, focal_length, 0.5], [0, 0, 1]], device=device)

#----------------------------------------------------------------------------
