"""Pinhole ray generation from OpenCV cam2world poses and normalised intrinsics (EG3D RaySampler)."""

import torch

#----------------------------------------------------------------------------
# Not persistent: EG3D pickles reference this class by name and restore it without __init__, so forward() uses no
# attributes. The five None attributes exist only because EG3D pickles carry them.

class RaySampler(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ray_origins_h, self.ray_directions, self.depths, self.image_coords, self.rendering_options = \
            None, None, None, None, None

    def forward(self, cam2world_matrix: torch.Tensor, intrinsics: torch.Tensor, resolution: int):
        """One ray per pixel centre, row-major (ray index = row * resolution + col).

        Args:
            cam2world_matrix: [N, 4, 4] OpenCV camera-to-world (x right, y down, z forward).
            intrinsics: [N, 3, 3] intrinsics normalised by the image size.
            resolution: pixels per side.
        Returns:
            (ray_origins [N, res^2, 3], ray_directions [N, res^2, 3] unit length).
        """
        N, M = cam2world_matrix.shape[0], resolution ** 2
        device = cam2world_matrix.device
        cam_locs_world = cam2world_matrix[:, :3, 3]
        fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
        cx, cy = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None]
        sk = intrinsics[:, 0, 1, None]

        # Normalised pixel centres, computed as k*(1/res) + 0.5/res in float32 (bit-compatible with EG3D).
        k = torch.arange(resolution, dtype=torch.float32, device=device) * (1. / resolution) + (0.5 / resolution)
        u = k.repeat(resolution).unsqueeze(0)              # column coordinate, fastest-varying
        v = k.repeat_interleave(resolution).unsqueeze(0)   # row coordinate

        # Unproject onto the z=1 plane (skew-aware), then to world space with one batched matmul.
        x_lift = (u - cx + cy * sk / fy - sk * v / fy) / fx
        y_lift = (v - cy) / fy
        ones = torch.ones((N, M), device=device)
        cam_rel_points = torch.stack((x_lift.expand(N, M), y_lift.expand(N, M), ones, ones), dim=-1)
        world_rel_points = torch.bmm(cam2world_matrix, cam_rel_points.permute(0, 2, 1)).permute(0, 2, 1)[:, :, :3]

        ray_dirs = torch.nn.functional.normalize(world_rel_points - cam_locs_world[:, None, :], dim=2)
        ray_origins = cam_locs_world.unsqueeze(1).repeat(1, M, 1)
        return ray_origins, ray_dirs

#----------------------------------------------------------------------------
