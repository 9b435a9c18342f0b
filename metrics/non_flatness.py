"""Non-Flatness Score nfs256 (3DGP): mean over samples of exp(entropy) of the rendered depth histogram."""

import copy
import math
from typing import Optional, Tuple

import numpy as np
import torch

from . import metric_utils

#----------------------------------------------------------------------------

def non_flatness_scores(depth: torch.Tensor, near_far: Optional[Tuple[float, float]] = None,
                        num_bins: int = 64) -> torch.Tensor:
    """Per-image NFS [N] of depth maps [N,1,H,W] or [N,H,W] (3dgp-reference section 7, steps 3-4).

    Depth is clamped to [near, far] and histogrammed into `num_bins` equal bins; p_b = count_b / pixels,
    H = -sum_b p_b ln(p_b + 1e-12), NFS = exp(H) in [1, num_bins]: 1 for a flat (single-bin) depth map, num_bins for
    depth spread evenly over the range. Without near_far each image uses its own min/max (e.g. EG3D 'auto' rays).
    """
    d = depth.reshape(depth.shape[0], -1).to(torch.float64)
    scores = []
    for row in d:
        lo, hi = near_far if near_far is not None else (float(row.min()), float(row.max()))
        if hi <= lo: # constant depth map: everything in one bin
            scores.append(torch.ones([], dtype=torch.float64))
            continue
        counts = torch.histc(row.clamp(lo, hi), bins=num_bins, min=lo, max=hi)
        p = counts / row.numel()
        scores.append(torch.exp(-(p * torch.log(p + 1e-12)).sum()))
    return torch.stack(scores).to(torch.float32)

#----------------------------------------------------------------------------

def _frontal_prior_cameras(G: torch.nn.Module, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """3DGP's NFS cameras: a prior sample with angles forced to frontal (yaw 0, pitch pi/2, roll 0), then passed
    through the camera generator (which replaces the angles). Raw prior layout (spec 2.1): yaw, pitch, roll, ..."""
    import gen_utils
    if not (hasattr(G, 'camera_prior') and hasattr(G, 'sample_cameras')):
        return gen_utils.sample_cameras(G, z, c, 'learned')
    prior = G.camera_prior.sample(z.shape[0], device=z.device).clone()
    prior[:, 0], prior[:, 1], prior[:, 2] = 0.0, math.pi / 2, 0.0
    return G.sample_cameras(z, c if G.c_dim > 0 else None, camera_mode='learned', prior=prior)[1]

class _SkipSuperresolution(torch.nn.Module):
    """Replaces an EG3D generator's superresolution head on nfs256's private copy: the metric reads only the
    rendered depth, and the heads are built for their own input size (SuperresolutionHybrid4X rejects 256^2)."""
    def forward(self, rgb: torch.Tensor, x: torch.Tensor, ws: torch.Tensor, **block_kwargs) -> torch.Tensor:
        return rgb

def compute_nfs(opts: metric_utils.MetricOptions, num_gen: int, num_bins: int = 64, cut_quantile: float = 0.5,
                batch_size: int = 4, resolution: int = 256) -> float:
    """Mean NFS of `num_gen` raw rendered depth maps of `resolution`^2 pixels (3dgp-reference section 7).

    Both generator families render their depth at `resolution` (the neural rendering resolution of the call, not
    the net's own, which for EG3D is 64 or 128) and histogram it over their own ray interval [ray_start, ray_end].
    What differs, because the nets differ:
      cameras:  3DGP nets: prior with frontal angles, then the camera generator (spec); EG3D nets: their canonical
                frontal camera, which conditions the mapping and places the render (they learn no cameras).
      range:    the bins span each net's ray interval (3DGP [0.75, 1.25]; EG3D FFHQ [2.25, 3.3]), i.e. the same
                share of the ray; EG3D nets with ray_start 'auto' bin each image over its own depth min/max.
      density:  3DGP's renderer zeroes densities below the `cut_quantile` quantile for this metric (generators
                that support it expose 'cut_quantile' in rendering_kwargs); EG3D's renderer has no such cut, so its
                depth is the uncut expected depth. EG3D and 3DGP scores are therefore close, not identical, protocols.
    """
    import gen_utils
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    if not gen_utils.is_3d(G):
        raise ValueError('nfs256 needs a 3D generator that returns image_depth')
    if 'cut_quantile' in gen_utils.rendering_kwargs(G):
        G.rendering_kwargs = dict(G.rendering_kwargs, cut_quantile=cut_quantile)
    if isinstance(getattr(G, 'superresolution', None), torch.nn.Module):
        G.superresolution = _SkipSuperresolution()
    G_kwargs = dict(opts.G_kwargs, neural_rendering_resolution=resolution)
    near_far = gen_utils.depth_range(G)
    class_rng = np.random.RandomState(opts.seed + opts.rank)
    def scores(z: torch.Tensor, c: Optional[torch.Tensor]) -> torch.Tensor:
        if gen_utils.learns_camera(G):
            if c is None:
                c = gen_utils.class_labels(G, z.shape[0], rng=class_rng, device=z.device)
            out = gen_utils.generate(G, z, c, camera=_frontal_prior_cameras(G, z, c), **G_kwargs)
        else:
            out = gen_utils.generate(G, z, None, **G_kwargs) # frontal conditioning and render camera
        if 'image_depth' not in out:
            raise ValueError(f'{type(G).__name__} returned no image_depth: nfs256 needs rendered depth')
        return non_flatness_scores(out['image_depth'], near_far, num_bins)[:, None]
    rows = metric_utils.compute_generated_rows(opts, scores, num_gen, batch_size, tag='nfs renders',
                                               labels=gen_utils.learns_camera(G))
    if opts.rank != 0:
        return float('nan')
    return float(rows.mean())

#----------------------------------------------------------------------------
