"""`src.training.layers` of 3DGP pickles: layer names the embedded sources import, and normalize_2nd_moment."""

import torch

from training.networks_stylegan2 import Conv2dLayer, FullyConnectedLayer, MappingNetwork  # noqa: F401
from eg3d_ext.discriminator import ScalarEncoder1d  # noqa: F401 -- same constructor (coord_dim, x_multiplier, const_emb_dim)

#----------------------------------------------------------------------------

def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """x * rsqrt(mean(x^2) + eps) along dim (StyleGAN2)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()

#----------------------------------------------------------------------------
