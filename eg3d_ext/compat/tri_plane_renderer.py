"""`src.training.tri_plane_renderer` of 3DGP pickles: the plain tri-plane lookup function (spec 1.4) plus the names
its embedded sources import. The renderer classes are persistent in 3DGP pickles (they carry their own code), so
here they only need to exist."""

from typing import Any, Callable

import torch
import torch.nn.functional as F

from .networks import ClassicalRayMarcher, ImportanceRenderer, MipRayMarcher2  # noqa: F401
from .rendering_utils import compute_cam2world_matrix, normalize, sample_rays  # noqa: F401

#----------------------------------------------------------------------------

def simple_tri_plane_renderer(x: torch.Tensor, coords: torch.Tensor, mlp: Callable, scale: float = 1.0) -> Any:
    """Tri-plane features at world points, decoded by `mlp` (3DGP's signature and contract).

    x: planes [B, 3*C, H, W] (XY, XZ, YZ); coords [B, N, 3]; scale = cube_scale (the planes span [-scale, scale]^3).
    Bilinear lookup (align_corners=True, zeros outside); `mlp` receives the per-plane features [B, 3, N, C] (3DGP's
    TriPlaneMLP averages the planes itself) and its output is returned as is.
    """
    B, C3, H, W = x.shape
    if C3 % 3 != 0:
        raise ValueError(f'simple_tri_plane_renderer: expected 3 planes, got {C3} channels')
    q = coords / scale
    grid = torch.stack([q[..., [0, 1]], q[..., [0, 2]], q[..., [1, 2]]], dim=1).reshape(B * 3, 1, -1, 2)
    feats = F.grid_sample(x.reshape(B * 3, C3 // 3, H, W), grid.to(x.dtype), mode='bilinear', padding_mode='zeros',
                          align_corners=True) # [B*3, C, 1, N]
    return mlp(feats.reshape(B, 3, C3 // 3, -1).permute(0, 1, 3, 2))

#----------------------------------------------------------------------------
