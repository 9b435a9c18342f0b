"""`src.training.tri_plane_renderer` of 3DGP pickles: the plain tri-plane lookup function (spec 1.4) plus the names
its embedded sources import. The renderer classes are persistent in 3DGP pickles (they carry their own code), so
here they only need to exist."""

from typing import Callable

import torch

from .networks import ClassicalRayMarcher, ImportanceRenderer, MipRayMarcher2  # noqa: F401
from .rendering_utils import compute_cam2world_matrix, normalize, sample_rays  # noqa: F401

#----------------------------------------------------------------------------

def simple_tri_plane_renderer(x: torch.Tensor, coords: torch.Tensor, mlp: Callable, scale: float = 0.5) -> torch.Tensor:
    """Tri-plane features at world points, decoded by `mlp`.

    x: planes [B, 3, C, H, W] or [B, 3*C, H, W] (XY, XZ, YZ); coords [B, N, 3]; scale = cube_scale (the planes span
    [-scale, scale]^3). Bilinear lookup (align_corners=True, zeros outside), mean over the planes -> mlp([B, N, C]).
    """
    from eg3d_ext.generator import sample_tri_planes
    if x.ndim == 4:
        x = x.reshape(x.shape[0], 3, x.shape[1] // 3, x.shape[2], x.shape[3])
    return mlp(sample_tri_planes(x, coords, scale))

#----------------------------------------------------------------------------
