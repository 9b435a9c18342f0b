"""`src.training.training_utils` of 3DGP pickles: schedules, batch-wise evaluation and patch extraction."""

from typing import Any, Callable, Dict

import torch

#----------------------------------------------------------------------------

def linear_schedule(step: float, val_start: float, val_end: float, period: float, start_step: float = 0) -> float:
    """lin(t; a -> b over T) starting at start_step: val_start up to start_step, val_end from start_step + period on
    (period <= 0: val_end from start_step on)."""
    if step >= start_step + period:
        return val_end
    if step <= start_step:
        return val_start
    return val_start + (val_end - val_start) * (step - start_step) / period

def _cat(outs: list, dim: int) -> Any:
    first = outs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outs, dim=dim)
    if isinstance(first, dict):
        return type(first)({k: _cat([o[k] for o in outs], dim) for k in first})
    if isinstance(first, (tuple, list)):
        return type(first)(_cat([o[i] for o in outs], dim) for i in range(len(first)))
    return first # non-tensor outputs (e.g. None) are assumed equal across chunks

def run_batchwise(fn: Callable, data: Dict[str, torch.Tensor], batch_size: int, dim: int = 0, **kwargs) -> Any:
    """fn(**chunk, **kwargs) over chunks of `batch_size` along `dim` of every tensor in `data`; outputs (tensors,
    or dicts/tuples of them) are concatenated along `dim`. Non-tensor entries of data are passed whole."""
    sizes = {v.shape[dim] for v in data.values() if isinstance(v, torch.Tensor)}
    if len(sizes) != 1:
        raise ValueError(f'run_batchwise: tensors must share their size along dim {dim}, got {sorted(sizes)}')
    n = sizes.pop()
    outs = []
    for lo in range(0, n, batch_size):
        chunk = {k: (v.narrow(dim, lo, min(batch_size, n - lo)) if isinstance(v, torch.Tensor) else v) for k, v in data.items()}
        outs.append(fn(**chunk, **kwargs))
    return _cat(outs, dim)

def extract_patches(x: torch.Tensor, patch_params: Dict[str, torch.Tensor], resolution: int) -> torch.Tensor:
    """Bilinear crop of each image's window [o, o+s] (x from the left, y offset from the bottom; spec 1.7, 5.6) at
    resolution^2. patch_params: 'scales' [B,2] and 'offsets' [B,2] in [0,1] image units."""
    from eg3d_ext.loss_3dgp import extract_patches as crop
    scales, offsets = patch_params['scales'], patch_params['offsets']
    pp = torch.stack([scales[:, 0], offsets[:, 0], offsets[:, 1]], dim=1)
    return crop(x, pp, resolution)

#----------------------------------------------------------------------------
