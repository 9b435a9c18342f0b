"""Tri-plane feature sampling and two-pass (stratified + importance) volume rendering (EG3D ImportanceRenderer)."""

import torch
import torch.nn.functional as F
from training.volumetric_rendering import math_utils
from training.volumetric_rendering.ray_marcher import MipRayMarcher2

#----------------------------------------------------------------------------

def generate_planes() -> torch.Tensor:
    """Axes of the three feature planes, [3, 3, 3] float32.

    Projection uses coords @ inverse(axes[k]), which with these values gives (x, y), (x, z), (z, x) rather than the
    intended (x, y), (y, z), (z, x). Kept deliberately: every EG3D checkpoint was trained with it (eg3d#30, #53, #67).
    """
    return torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                         [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
                         [[0, 0, 1], [1, 0, 0], [0, 1, 0]]], dtype=torch.float32)

def project_onto_planes(planes: torch.Tensor, coordinates: torch.Tensor) -> torch.Tensor:
    """Project points onto each plane: [n_planes, 3, 3] axes, [N, M, 3] points -> [N * n_planes, M, 2]."""
    N, M, _ = coordinates.shape
    n_planes = planes.shape[0]
    # Only the first two columns of the inverse are needed; broadcasting avoids copying the points per plane.
    inv_planes = torch.linalg.inv(planes)[:, :, :2].to(coordinates.dtype) # [P, 3, 2]
    projections = torch.matmul(coordinates.unsqueeze(1), inv_planes.unsqueeze(0)) # [N, P, M, 2]
    return projections.reshape(N * n_planes, M, 2)

def sample_from_planes(plane_axes, plane_features, coordinates, mode='bilinear', padding_mode='zeros', box_warp=None):
    """Bilinearly sample tri-plane features at world points.

    Args:
        plane_axes: [3, 3, 3] (see generate_planes).
        plane_features: [N, 3, C, H, W].
        coordinates: [N, M, 3]; the cube of side `box_warp` maps onto the planes' [-1, 1] extent.
    Returns:
        [N, 3, M, C] features (zeros outside the planes).
    """
    assert padding_mode == 'zeros'
    N, n_planes, C, H, W = plane_features.shape
    _, M, _ = coordinates.shape
    plane_features = plane_features.view(N * n_planes, C, H, W)
    coordinates = (2 / box_warp) * coordinates
    grid = project_onto_planes(plane_axes, coordinates).unsqueeze(1) # [N*P, 1, M, 2]
    # EG3D casts the grid to float32 (= the planes' dtype in practice); following the planes also allows float64.
    grid = grid.to(plane_features.dtype if plane_features.dtype == torch.float64 else torch.float32)
    out = F.grid_sample(plane_features, grid, mode=mode, padding_mode=padding_mode, align_corners=False)
    return out.permute(0, 3, 2, 1).reshape(N, n_planes, M, C)

def planes_channels_last(plane_features: torch.Tensor) -> torch.Tensor:
    """[N, 3, C, H, W] -> [N*3*H*W, C] rows for `sample_from_planes_cl` (one copy, shared by both render passes)."""
    C = plane_features.shape[2]
    return plane_features.permute(0, 1, 3, 4, 2).reshape(-1, C)

def sample_from_planes_cl(plane_axes, planes_cl, planes_shape, coordinates, box_warp):
    """Same values as `sample_from_planes` (bilinear, zeros padding, align_corners=False), as four row gathers from
    channels-last planes. On CPU its backward (index_add of contiguous C-vectors) is ~1.5x faster than
    grid_sampler_2d_backward's per-channel scatter; forward-only it is slower, so the renderer uses it for training.

    Args:
        planes_cl: `planes_channels_last(planes)`; planes_shape: the original [N, 3, C, H, W].
        coordinates: [N, M, 3]. Returns [N, 3, M, C] (contiguous).
    """
    N, n_planes, C, H, W = planes_shape
    M = coordinates.shape[1]
    B = N * n_planes
    grid = project_onto_planes(plane_axes, (2 / box_warp) * coordinates).to(planes_cl.dtype) # [B, M, 2]
    ix = ((grid[..., 0] + 1) * W - 1) / 2 # unnormalise as grid_sample with align_corners=False
    iy = ((grid[..., 1] + 1) * H - 1) / 2
    x0, y0 = ix.floor(), iy.floor()
    wx1, wy1 = ix - x0, iy - y0
    x0, y0 = x0.long(), y0.long()
    base = (torch.arange(B, device=planes_cl.device) * (H * W)).view(B, 1)
    out = None
    for dx, dy, w in ((0, 0, (1 - wx1) * (1 - wy1)), (1, 0, wx1 * (1 - wy1)), (0, 1, (1 - wx1) * wy1), (1, 1, wx1 * wy1)):
        xi, yi = x0 + dx, y0 + dy
        valid = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H) # zeros padding: outside taps get weight 0
        idx = base + yi.clamp(0, H - 1) * W + xi.clamp(0, W - 1)
        term = planes_cl.index_select(0, idx.reshape(-1)).view(B, M, C) * (w * valid).unsqueeze(-1)
        out = term if out is None else out + term
    return out.view(N, n_planes, M, C)

def sample_from_3dgrid(grid: torch.Tensor, coordinates: torch.Tensor) -> torch.Tensor:
    """Trilinearly sample a [1, C, D, H, W] grid at [N, M, 3] points in [-1, 1]^3 -> [N, M, C]."""
    batch_size, n_coords, _ = coordinates.shape
    out = F.grid_sample(grid.expand(batch_size, -1, -1, -1, -1), coordinates.reshape(batch_size, 1, 1, -1, 3),
        mode='bilinear', padding_mode='zeros', align_corners=False)
    N, C, H, W, D = out.shape
    return out.permute(0, 4, 3, 2, 1).reshape(N, H * W * D, C)

#----------------------------------------------------------------------------
# Not persistent: EG3D pickles reference this class by name and restore it without __init__, carrying only
# `plane_axes` (a plain tensor attribute, not a buffer) and the `ray_marcher` child. forward() relies on nothing else.

# CPU training fast path: sample the tri-planes by row gathers from one channels-last copy (see sample_from_planes_cl).
fast_cpu_sampling = True

def use_cl_sampling(planes: torch.Tensor) -> bool:
    """Whether tri-plane sampling takes the gather fast path (CPU training with gradients, `fast_cpu_sampling`)."""
    return fast_cpu_sampling and planes.device.type == 'cpu' and planes.requires_grad and torch.is_grad_enabled()

class ImportanceRenderer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ray_marcher = MipRayMarcher2()
        self.plane_axes = generate_planes()

    def forward(self, planes, decoder, ray_origins, ray_directions, rendering_options):
        """Render features, depth and opacity for each ray.

        Args:
            planes: [N, 3, C, H, W] tri-plane features; decoder: callable(features [N,3,M,C], dirs) -> {'rgb','sigma'}.
            ray_origins, ray_directions: [N, M, 3].
            rendering_options: EG3D rendering_kwargs (depth_resolution, depth_resolution_importance, ray_start,
                ray_end, box_warp, disparity_space_sampling, clamp_mode, optional white_back, density_noise).
        Returns:
            (rgb [N, M, C] in [-1, 1], depth [N, M, 1], weights.sum [N, M, 1]).
        """
        # EG3D compat: plane_axes persists on the device of the last call (it is not a buffer).
        self.plane_axes = self.plane_axes.to(ray_origins.device)
        ray_start, ray_end = rendering_options['ray_start'], rendering_options['ray_end']
        if ray_start == ray_end == 'auto':
            ray_start, ray_end = math_utils.get_ray_limits_box(ray_origins, ray_directions,
                box_side_length=rendering_options['box_warp'])
            is_ray_valid = ray_end > ray_start
            if torch.any(is_ray_valid).item():
                valid_start = ray_start[is_ray_valid]
                # EG3D quirk kept for compat: invalid rays end at the max *start* of the valid rays.
                ray_start[~is_ray_valid] = valid_start.min()
                ray_end[~is_ray_valid] = valid_start.max()
        planes_cl = planes_channels_last(planes) if use_cl_sampling(planes) else None
        depths_coarse = self.sample_stratified(ray_origins, ray_start, ray_end, rendering_options['depth_resolution'],
            rendering_options['disparity_space_sampling'])

        # Coarse pass.
        colors_coarse, densities_coarse = self._evaluate(planes, decoder, ray_origins, ray_directions, depths_coarse,
            rendering_options, planes_cl)

        # Fine pass: resample where the coarse weights are large, then march all samples in depth order.
        N_importance = rendering_options['depth_resolution_importance']
        if N_importance > 0:
            weights = self.ray_marcher.compute_weights(densities_coarse, depths_coarse, rendering_options)
            depths_fine = self.sample_importance(depths_coarse, weights, N_importance)
            colors_fine, densities_fine = self._evaluate(planes, decoder, ray_origins, ray_directions, depths_fine,
                rendering_options, planes_cl)
            all_depths, all_colors, all_densities = self.unify_samples(depths_coarse, colors_coarse,
                densities_coarse, depths_fine, colors_fine, densities_fine)
            rgb_final, depth_final, weights = self.ray_marcher(all_colors, all_densities, all_depths,
                rendering_options)
        else:
            rgb_final, depth_final, weights = self.ray_marcher(colors_coarse, densities_coarse, depths_coarse,
                rendering_options)
        return rgb_final, depth_final, weights.sum(2)

    def _evaluate(self, planes, decoder, ray_origins, ray_directions, depths, options, planes_cl=None):
        """Decode the points o + t*d for depths [N, M, S, 1] -> colours [N, M, S, C], densities [N, M, S, 1]."""
        N, M, S, _ = depths.shape
        coords = (ray_origins.unsqueeze(-2) + depths * ray_directions.unsqueeze(-2)).reshape(N, -1, 3)
        dirs = ray_directions.unsqueeze(-2).expand(-1, -1, S, -1).reshape(N, -1, 3)
        out = self.run_model(planes, decoder, coords, dirs, options, planes_cl=planes_cl)
        return out['rgb'].reshape(N, M, S, out['rgb'].shape[-1]), out['sigma'].reshape(N, M, S, 1)

    def run_model(self, planes, decoder, sample_coordinates, sample_directions, options, planes_cl=None):
        """Raw decoder output at points [N, M, 3]: {'rgb': [N, M, C], 'sigma': [N, M, 1]} (+ optional density noise).
        planes_cl: optional `planes_channels_last(planes)` (the CPU training fast path)."""
        if planes_cl is None and use_cl_sampling(planes) and sample_coordinates.shape[1] >= 4096:
            planes_cl = planes_channels_last(planes)
        if planes_cl is not None:
            sampled_features = sample_from_planes_cl(self.plane_axes, planes_cl, planes.shape, sample_coordinates,
                box_warp=options['box_warp'])
        else:
            sampled_features = sample_from_planes(self.plane_axes, planes, sample_coordinates, padding_mode='zeros',
                box_warp=options['box_warp'])
        out = decoder(sampled_features, sample_directions)
        if options.get('density_noise', 0) > 0:
            out['sigma'] += torch.randn_like(out['sigma']) * options['density_noise']
        return out

    def sort_samples(self, all_depths, all_colors, all_densities):
        _, indices = torch.sort(all_depths, dim=-2)
        all_depths = torch.gather(all_depths, -2, indices)
        all_colors = torch.gather(all_colors, -2, indices.expand(-1, -1, -1, all_colors.shape[-1]))
        all_densities = torch.gather(all_densities, -2, indices.expand(-1, -1, -1, 1))
        return all_depths, all_colors, all_densities

    def unify_samples(self, depths1, colors1, densities1, depths2, colors2, densities2):
        all_depths = torch.cat([depths1, depths2], dim=-2)
        all_colors = torch.cat([colors1, colors2], dim=-2)
        all_densities = torch.cat([densities1, densities2], dim=-2)
        return self.sort_samples(all_depths, all_colors, all_densities)

    def sample_stratified(self, ray_origins, ray_start, ray_end, depth_resolution, disparity_space_sampling=False):
        """Evenly spaced depths [N, M, S, 1], each jittered by U[0,1) of one step (rand_like drawn on that shape)."""
        N, M, _ = ray_origins.shape
        S = depth_resolution
        device = ray_origins.device
        if disparity_space_sampling:
            t = torch.linspace(0, 1, S, device=device).reshape(1, 1, S, 1).expand(N, M, S, 1)
            t = t + torch.rand((N, M, S, 1), device=device) * (1 / (S - 1))
            return 1. / (1. / ray_start * (1. - t) + 1. / ray_end * t)
        if isinstance(ray_start, torch.Tensor):
            # Built as [S, N, M, 1] and permuted so rand_like sees EG3D's memory layout (same random stream).
            depths = math_utils.linspace(ray_start, ray_end, S).permute(1, 2, 0, 3)
            depth_delta = (ray_end - ray_start) / (S - 1)
            return depths + torch.rand_like(depths) * depth_delta[..., None]
        depths = torch.linspace(ray_start, ray_end, S, device=device).reshape(1, 1, S, 1)
        return depths + torch.rand((N, M, S, 1), device=device) * ((ray_end - ray_start) / (S - 1))

    def sample_importance(self, z_vals, weights, N_importance):
        """Draw N_importance depths per ray [N, M, N_importance, 1] from the smoothed coarse weights (no grad)."""
        with torch.no_grad():
            batch_size, num_rays, samples_per_ray, _ = z_vals.shape
            z_vals = z_vals.reshape(batch_size * num_rays, samples_per_ray)
            weights = weights.reshape(batch_size * num_rays, -1)
            # Smooth: max-pool (k2, s1, pad1) then avg-pool (k2, s1), i.e. mean of neighbouring pairwise maxima.
            weights = F.max_pool1d(weights.unsqueeze(1).float(), 2, 1, padding=1)
            weights = F.avg_pool1d(weights, 2, 1).squeeze(1) # squeeze(1), not squeeze(): also works for one ray
            weights = weights + 0.01
            z_vals_mid = 0.5 * (z_vals[:, :-1] + z_vals[:, 1:])
            # EG3D quirk kept: S-3 weights for S-1 bins, so the last midpoint is never used.
            samples = self.sample_pdf(z_vals_mid, weights[:, 1:-1], N_importance)
            return samples.detach().reshape(batch_size, num_rays, N_importance, 1)

    def sample_pdf(self, bins, weights, N_importance, det=False, eps=1e-5):
        """Inverse-transform sampling of a piecewise-constant pdf (NeRF).

        Args:
            bins: [R, B] bin edges; weights: [R, W] (EG3D passes W = B - 2); N_importance: samples per row.
            det: evenly spaced u instead of uniform random.
        Returns:
            [R, N_importance] samples.
        """
        N_rays, N_samples_ = weights.shape
        weights = weights + eps # avoid division by zero
        pdf = weights / torch.sum(weights, -1, keepdim=True)
        cdf = torch.cumsum(pdf, -1)
        cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], -1) # [R, W+1]
        if det:
            u = torch.linspace(0, 1, N_importance, device=bins.device).expand(N_rays, N_importance).contiguous()
        else:
            u = torch.rand(N_rays, N_importance, device=bins.device)
        inds = torch.searchsorted(cdf, u, right=True)
        below = torch.clamp_min(inds - 1, 0)
        above = torch.clamp_max(inds, N_samples_)
        inds_sampled = torch.stack([below, above], -1).view(N_rays, 2 * N_importance)
        cdf_g = torch.gather(cdf, 1, inds_sampled).view(N_rays, N_importance, 2)
        bins_g = torch.gather(bins, 1, inds_sampled).view(N_rays, N_importance, 2)
        denom = cdf_g[..., 1] - cdf_g[..., 0]
        denom = torch.where(denom < eps, torch.ones_like(denom), denom) # degenerate bins: take the lower edge
        return bins_g[..., 0] + (u - cdf_g[..., 0]) / denom * (bins_g[..., 1] - bins_g[..., 0])

#----------------------------------------------------------------------------
