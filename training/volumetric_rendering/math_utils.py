"""Small geometry helpers for ray generation and ray/box intersection."""

import torch

#----------------------------------------------------------------------------

def transform_vectors(matrix: torch.Tensor, vectors4: torch.Tensor) -> torch.Tensor:
    """Left-multiply a batch of row vectors [N, ..., 4] by `matrix` [4, 4] (i.e. vectors4 @ matrix^T)."""
    return torch.matmul(vectors4, matrix.T)

def normalize_vecs(vectors: torch.Tensor) -> torch.Tensor:
    """Divide by the Euclidean norm of the last axis (no epsilon, as EG3D's camera code)."""
    return vectors / torch.norm(vectors, dim=-1, keepdim=True)

def torch_dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Dot product along the last axis."""
    return (x * y).sum(-1)

#----------------------------------------------------------------------------

def get_ray_limits_box(rays_o: torch.Tensor, rays_d: torch.Tensor, box_side_length: float):
    """Slab-test rays against the cube [-L/2, L/2]^3 (Williams et al. 2005).

    Args:
        rays_o, rays_d: ray origins and directions, [..., 3] (gradients are not tracked).
        box_side_length: cube side L.
    Returns:
        (t_start, t_end), each [..., 1]; rays that miss the box get start -1 and end -2.
    """
    shape = rays_o.shape[:-1]
    o = rays_o.detach().reshape(-1, 3)
    invdir = 1 / rays_d.detach().reshape(-1, 3)
    half = torch.tensor(box_side_length / 2, dtype=o.dtype, device=o.device)
    # Near face is the +half face for negative directions, the -half face otherwise (and vice versa for far).
    neg = invdir < 0
    t_near = (torch.where(neg, half, -half) - o) * invdir # [M, 3]
    t_far = (torch.where(neg, -half, half) - o) * invdir
    tmin, tmax = t_near[:, 0], t_far[:, 0]
    valid = torch.ones_like(tmin, dtype=torch.bool)
    for axis in (1, 2): # x and y first, then z
        amin, amax = t_near[:, axis], t_far[:, axis]
        valid &= ~torch.logical_or(tmin > amax, amin > tmax)
        tmin = torch.max(tmin, amin)
        tmax = torch.min(tmax, amax)
    tmin = torch.where(valid, tmin, torch.full_like(tmin, -1))
    tmax = torch.where(valid, tmax, torch.full_like(tmax, -2))
    return tmin.reshape(*shape, 1), tmax.reshape(*shape, 1)

#----------------------------------------------------------------------------

def linspace(start: torch.Tensor, stop: torch.Tensor, num: int) -> torch.Tensor:
    """Batched linspace: [num, *start.shape] with out[k] = start + k/(num-1) * (stop - start)."""
    steps = torch.arange(num, dtype=torch.float32, device=start.device) / (num - 1)
    steps = steps.reshape(num, *([1] * start.ndim))
    return start[None] + steps * (stop - start)[None]

#----------------------------------------------------------------------------
