"""3DGP depth adaptor: normalizes rendered depth to [-1, 1] and randomly hands D either it or a learned adaptation."""

from typing import List, Optional, Tuple

import numpy as np
import torch
from torch_utils import misc
from torch_utils import persistence
from training.networks_stylegan2 import Conv2dLayer

# Pickle-compat: embedded in network pickles; imports only torch, numpy, torch_utils and EG3D's training names.

#----------------------------------------------------------------------------

def selection_probs(num_outputs: int, progress: float, selection_start_p: float) -> np.ndarray:
    """3DGP 'random' strategy: linear ramp p_k = p0 + k*delta over the n candidates (k = 0 is the raw depth),
    p0 = (1/n)(1 - progress) + selection_start_p * progress, delta chosen so the p_k sum to 1 (spec 3.3)."""
    n = num_outputs
    if n == 1:
        return np.ones([1])
    p0 = (1.0 / n) * (1.0 - progress) + selection_start_p * progress
    delta = 2.0 * (1.0 - n * p0) / (n * (n - 1))
    return p0 + delta * np.arange(n)

#----------------------------------------------------------------------------

@persistence.persistent_class
class DepthAdaptor(torch.nn.Module):
    """Rendered depth [N,1,H,W] (ray distance in [near, far]) -> depth for D (spec 3).
    Candidates: o0 = normalized raw depth, o_k = shared 1x1 head after hidden conv k."""

    def __init__(self,
        near:                           float,          # Ray start (min depth).
        far:                            float,          # Ray end (max depth).
        num_hid_layers:                 int = 3,        # Hidden 5x5 convs (0 = no adaptation).
        kernel_size:                    int = 5,
        hid_dim:                        int = 64,
        out_strategy:                   str = 'random', # 'random' | 'last' | 'mean' (training mode; eval = last).
        selection_start_p:              float = 0.1,    # Final probability of the raw depth for 'random'.
        anneal_kimg:                    float = 10000,  # Ramp of the selection probabilities.
        near_plane_offset_max_fraction: float = 0.25,
        near_plane_offset_bias:         float = -3.0,
        raw_prob:                       Optional[float] = None, # Fixed P(raw) (ablation); rest goes to the last head.
    ):
        super().__init__()
        if out_strategy not in ('random', 'last', 'mean'):
            raise ValueError(f'DepthAdaptor: unknown out_strategy {out_strategy!r} (random, last, mean)')
        if raw_prob is not None and not 0 <= raw_prob <= 1:
            raise ValueError(f'DepthAdaptor: raw_prob must be in [0, 1], got {raw_prob}')
        if raw_prob is not None and raw_prob < 1 and num_hid_layers == 0:
            raise ValueError('DepthAdaptor: raw_prob < 1 needs num_hid_layers > 0')
        self.near, self.far = float(near), float(far)
        self.num_hid_layers, self.out_strategy = num_hid_layers, out_strategy
        self.selection_start_p, self.anneal_kimg, self.raw_prob = selection_start_p, anneal_kimg, raw_prob
        self.near_plane_offset_max_fraction = near_plane_offset_max_fraction
        self.near_plane_offset_raw = torch.nn.Parameter(torch.full([1], float(near_plane_offset_bias)))
        self.layers = torch.nn.ModuleList([Conv2dLayer(1 if i == 0 else hid_dim, hid_dim, kernel_size=kernel_size,
            activation='lrelu') for i in range(num_hid_layers)])
        self.head = Conv2dLayer(hid_dim, 1, kernel_size=1) if num_hid_layers > 0 else None
        self.register_buffer('progress_coef', torch.zeros([])) # 0 -> 1 over anneal_kimg; copied to G_ema.

    @property
    def num_outputs(self) -> int:
        return self.num_hid_layers + 1

    def set_progress(self, cur_kimg: float) -> None:
        """Advance the selection schedule (called by the loss each step; not inside forward)."""
        p = 1.0 if self.anneal_kimg <= 0 else min(max(cur_kimg / self.anneal_kimg, 0.0), 1.0)
        self.progress_coef.fill_(p)

    def probs(self) -> np.ndarray:
        """Current selection probabilities over the candidates (training mode)."""
        n = self.num_outputs
        if self.raw_prob is not None:
            p = np.zeros([n])
            p[0] += self.raw_prob
            p[-1] += 1.0 - self.raw_prob
            return p
        if self.out_strategy == 'last':
            return np.eye(n)[-1]
        return selection_probs(n, float(self.progress_coef), self.selection_start_p)

    def normalize(self, depth: torch.Tensor) -> torch.Tensor:
        """[near + offset, far] -> [-1, 1], larger = farther; offset in (0, 0.25 (far - near)), learnable."""
        offset = torch.sigmoid(self.near_plane_offset_raw) * self.near_plane_offset_max_fraction * (self.far - self.near)
        near = self.near + offset
        return 2 * (depth - (self.far + near) / 2) / (self.far - near + 1e-12)

    def candidates(self, depth: torch.Tensor) -> List[torch.Tensor]:
        misc.assert_shape(depth, [None, 1, None, None])
        x = self.normalize(depth)
        outs = [x]
        for layer in self.layers:
            x = layer(x)
            outs.append(self.head(x))
        return outs

    def forward(self, depth: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns (selected depth [N,1,H,W], chosen candidate index [N])."""
        outs = self.candidates(depth)
        n = len(outs)
        N = depth.shape[0]
        if not self.training:
            return outs[-1], torch.full([N], n - 1, device=depth.device, dtype=torch.long)
        if self.out_strategy == 'mean' and self.raw_prob is None:
            return torch.stack(outs).mean(dim=0), torch.full([N], -1, device=depth.device, dtype=torch.long)
        p = torch.as_tensor(self.probs(), dtype=torch.float32, device=depth.device)
        idx = torch.multinomial(p, N, replacement=True)
        mask = torch.nn.functional.one_hot(idx, n).to(depth.dtype).t()[:, :, None, None, None] # [n, N, 1, 1, 1]
        return (torch.stack(outs) * mask).sum(dim=0), idx

#----------------------------------------------------------------------------
