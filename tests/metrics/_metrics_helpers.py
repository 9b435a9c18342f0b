"""Helpers shared by the metric tests: a 2D stand-in generator (importable by spawned DDP workers) and an
independent NFS reference."""

import math

import numpy as np
import torch

#----------------------------------------------------------------------------

class TinyImageG(torch.nn.Module):
    """A 2D 'generator' (z -> 16x16 image) standing in for G in the feature pipeline."""
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.z_dim, self.c_dim = 8, 0
        self.fc = torch.nn.Linear(8, 3 * 16 * 16)
    def forward(self, z, c, **kwargs):
        return torch.tanh(self.fc(z)).reshape(-1, 3, 16, 16)

def ref_nfs(depth: torch.Tensor, near: float, far: float, bins: int = 64) -> float:
    """Spec section 7 steps 3-4 with numpy: clamp, 64-bin histogram, exp(entropy), mean over images."""
    scores = []
    for d in depth.reshape(depth.shape[0], -1).double().numpy():
        counts, _ = np.histogram(np.clip(d, near, far), bins=bins, range=(near, far))
        p = counts / d.size
        scores.append(math.exp(-np.sum(p * np.log(p + 1e-12))))
    return float(np.mean(scores))

#----------------------------------------------------------------------------
