"""Alpha compositing of tri-plane samples along rays (EG3D MipRayMarcher2)."""

import torch
import torch.nn.functional as F

#----------------------------------------------------------------------------
# Not persistent: EG3D pickles reference this class by name and restore it without __init__ (it has no attributes).

class MipRayMarcher2(torch.nn.Module):
    def __init__(self):
        super().__init__()

    @staticmethod
    def _interval_weights(densities, depths, rendering_options):
        """Per-interval compositing weights w_k = alpha_k * T_k from raw densities at the sample depths."""
        if rendering_options['clamp_mode'] != 'softplus':
            raise ValueError(f"MipRayMarcher2: clamp_mode must be 'softplus', got {rendering_options['clamp_mode']!r}")
        deltas = depths[:, :, 1:] - depths[:, :, :-1]
        densities_mid = (densities[:, :, :-1] + densities[:, :, 1:]) / 2 # averaged before the activation (mip)
        densities_mid = F.softplus(densities_mid - 1)
        alpha = 1 - torch.exp(-(densities_mid * deltas))
        # Exclusive transmittance; the 1e-10 is added to every factor, as in EG3D.
        alpha_shifted = torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], -2)
        return alpha * torch.cumprod(alpha_shifted, -2)[:, :, :-1]

    def compute_weights(self, densities, depths, rendering_options):
        """Weights only (what importance sampling needs), without compositing colours or depth."""
        return self._interval_weights(densities, depths, rendering_options)

    def run_forward(self, colors, densities, depths, rendering_options):
        """
        Args:
            colors [N, M, S, C], densities [N, M, S, 1] (raw decoder sigma), depths [N, M, S, 1], in sample order.
        Returns:
            (rgb [N, M, C] mapped to [-1, 1], depth [N, M, 1], weights [N, M, S-1, 1]).
        """
        weights = self._interval_weights(densities, depths, rendering_options)
        colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
        depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2

        composite_rgb = torch.sum(weights * colors_mid, -2)
        weight_total = weights.sum(2)
        composite_depth = torch.sum(weights * depths_mid, -2) / weight_total
        # Empty rays (0/0 = NaN) get +inf, then everything is clamped to the range of ALL sample depths in the batch.
        composite_depth = torch.nan_to_num(composite_depth, float('inf'))
        composite_depth = torch.clamp(composite_depth, torch.min(depths), torch.max(depths))

        if rendering_options.get('white_back', False):
            composite_rgb = composite_rgb + 1 - weight_total
        composite_rgb = composite_rgb * 2 - 1 # [0, 1] -> [-1, 1]
        return composite_rgb, composite_depth, weights

    def forward(self, colors, densities, depths, rendering_options):
        return self.run_forward(colors, densities, depths, rendering_options)

#----------------------------------------------------------------------------
