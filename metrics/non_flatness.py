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

def compute_nfs(opts: metric_utils.MetricOptions, num_gen: int, num_bins: int = 64, cut_quantile: float = 0.5,
                batch_size: int = 4) -> float:
    """nfs256 with the 3DGP protocol for 3DGP nets; EG3D nets render from their canonical frontal camera.

    The 3DGP renderer zeroes densities below the 0.5-quantile for this metric only; generators that support it
    expose a 'cut_quantile' key in rendering_kwargs, which is set on a private copy here.
    """
    import gen_utils
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    if not gen_utils.is_3d(G):
        raise ValueError('nfs256 needs a 3D generator that returns image_depth')
    if 'cut_quantile' in gen_utils.rendering_kwargs(G):
        G.rendering_kwargs = dict(G.rendering_kwargs, cut_quantile=cut_quantile)
    near_far = gen_utils.depth_range(G)
    stats = metric_utils.FeatureStats(capture_all=True, max_items=num_gen)
    progress = opts.progress.sub(tag='nfs renders', num_items=num_gen)
    batches = metric_utils.generated_batches(opts, batch_size, labels=gen_utils.learns_camera(G))
    class_rng = np.random.RandomState(opts.seed + opts.rank)
    while not stats.is_full():
        z, c = next(batches)
        with torch.no_grad():
            if gen_utils.learns_camera(G):
                if c is None:
                    c = gen_utils.class_labels(G, z.shape[0], rng=class_rng, device=z.device)
                out = gen_utils.generate(G, z, c, camera=_frontal_prior_cameras(G, z, c), **opts.G_kwargs)
            else:
                out = gen_utils.generate(G, z, None, **opts.G_kwargs) # frontal conditioning and render camera
        if 'image_depth' not in out:
            raise ValueError(f'{type(G).__name__} returned no image_depth: nfs256 needs rendered depth')
        scores = non_flatness_scores(out['image_depth'], near_far, num_bins)
        stats.append_torch(scores[:, None].to(opts.device), num_gpus=opts.num_gpus, rank=opts.rank)
        progress.update(stats.num_items)
    if opts.rank != 0:
        return float('nan')
    return float(stats.get_all().mean())

#----------------------------------------------------------------------------
