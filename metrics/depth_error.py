"""depth_err: rendered depth of generated samples vs the true depth of their nearest real images, after the
least-squares scale/shift alignment used to evaluate monocular depth."""

import copy
import io
from typing import Dict, Optional, Tuple

import numpy as np
import PIL.Image
import torch

from . import metric_utils
from .dataset_files import DatasetFiles, dataset_path

# A generated sample has no ground truth of its own, so each one is paired with the real image closest to it in
# a small pixel space (RGB area-downsampled to PAIR_RES^2) and compared with that image's true depth, over the real
# image's foreground. Depth is compared up to an affine map (scale and shift fitted by least squares per pair), so
# the metric measures geometric shape, not the generator's depth units. Lower is better.

PAIR_RES = 16

#----------------------------------------------------------------------------

def align_scale_shift(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-sample least-squares s, t minimising sum_mask (s * pred + t - target)^2; returns s * pred + t.
    pred, target, mask: [N, ...] (mask bool, default all)."""
    p = pred.reshape(pred.shape[0], -1).to(torch.float64)
    g = target.reshape(target.shape[0], -1).to(torch.float64)
    m = torch.ones_like(p) if mask is None else mask.reshape(mask.shape[0], -1).to(torch.float64)
    n = m.sum(dim=1).clamp_min(1)
    mp, mg = (m * p).sum(1) / n, (m * g).sum(1) / n
    var = (m * (p - mp[:, None]) ** 2).sum(1)
    cov = (m * (p - mp[:, None]) * (g - mg[:, None])).sum(1)
    s = torch.where(var > 1e-20, cov / var.clamp_min(1e-20), torch.zeros_like(var)) # constant pred: shift only
    t = mg - s * mp
    return (s[:, None] * p + t[:, None]).reshape(pred.shape).to(pred.dtype)

def aligned_depth_error(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-sample RMSE [N] over the mask after scale/shift alignment of pred to target."""
    aligned = align_scale_shift(pred, target, mask).reshape(pred.shape[0], -1).to(torch.float64)
    g = target.reshape(target.shape[0], -1).to(torch.float64)
    m = torch.ones_like(g) if mask is None else mask.reshape(mask.shape[0], -1).to(torch.float64)
    return torch.sqrt((m * (aligned - g) ** 2).sum(1) / m.sum(1).clamp_min(1)).to(torch.float32)

#----------------------------------------------------------------------------

def _pair_features(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [-1,1] float [N,3,H,W] -> [N, 3*PAIR_RES^2] float features in [-1,1]."""
    x = images.to(torch.float32)
    if images.dtype == torch.uint8:
        x = x / 127.5 - 1
    return torch.nn.functional.interpolate(x[:, :3], size=(PAIR_RES, PAIR_RES), mode='area').flatten(1)

# PIL modes of single-channel PNGs by bit depth ('I' is how older Pillow versions open 16-bit grayscale).
PNG_16BIT_MODES = ('I;16', 'I;16B', 'I;16L', 'I')
PNG_8BIT_MODES = ('L', 'LA', 'RGB', 'RGBA')

def _decode_depth(files: DatasetFiles, name: str, info: dict) -> Tuple[np.ndarray, np.ndarray]:
    """True depth [H,W] float64 and foreground mask of '<name>_depth.png'.

    The code range (255 or 65535) follows the PNG's bit depth, not its values: a 16-bit map of a near scene may
    hold only codes below 256. dataset.json "depth" gives the encoding; with a global near/far range, the far code
    (the largest one) is background.
    """
    stem = name.rsplit('.', 1)[0]
    dname = stem + '_depth.png'
    if dname not in files.names:
        raise ValueError(f'{files.path}: no depth map {dname} for {name}; depth_err needs an RGB-D data set')
    img = PIL.Image.open(io.BytesIO(files.read(dname)))
    if img.mode in PNG_16BIT_MODES:
        vmax = 65535.0
    elif img.mode in PNG_8BIT_MODES:
        vmax = 255.0
    else:
        raise ValueError(f'{files.path}: depth map {dname} has PIL mode {img.mode!r}; expected 8- or 16-bit grayscale')
    v = np.asarray(img, dtype=np.float64)
    if v.ndim == 3:
        v = v[..., 0]
    if info.get('encoding') == 'global_range' and 'near' in info and 'far' in info:
        return info['near'] + v / vmax * (info['far'] - info['near']), v < vmax
    return v / vmax, np.ones_like(v, dtype=bool)

def compute_depth_err(opts: metric_utils.MetricOptions, num_gen: int, max_real: Optional[int] = None,
                      batch_size: int = 8) -> Dict[str, float]:
    """depth_err: mean aligned RMSE over generated samples whose paired real image has foreground depth."""
    import gen_utils
    files = DatasetFiles(dataset_path(opts.dataset_kwargs))
    info = files.json().get('depth', {}) if 'dataset.json' in files.names else {}
    names = files.image_names()[:max_real]
    if not names:
        raise ValueError(f'{files.path}: no images found')
    real_feats = []
    for lo in range(0, len(names), 256):
        imgs = [np.asarray(PIL.Image.open(io.BytesIO(files.read(n))).convert('RGB')) for n in names[lo:lo + 256]]
        real_feats.append(_pair_features(torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2)))
    real_feats = torch.cat(real_feats).to(opts.device)

    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    def errors(z: torch.Tensor, c: Optional[torch.Tensor]) -> torch.Tensor:
        """[batch, 2]: (error if valid else 0, valid); valid = the paired real has >= 4 foreground pixels."""
        out = gen_utils.generate(G, z, c, **opts.G_kwargs)
        if 'image_depth' not in out:
            raise ValueError(f'{type(G).__name__} returned no image_depth: depth_err needs rendered depth')
        depth = out['image_depth'].to(torch.float32)
        nn_idx = torch.cdist(_pair_features(out['image']), real_feats).argmin(dim=1).cpu().numpy()
        targets, masks = [], []
        for idx in nn_idx:
            d, m = _decode_depth(files, names[idx], info)
            d, m = torch.from_numpy(d)[None, None], torch.from_numpy(m.astype(np.float64))[None, None]
            size = depth.shape[-2:]
            targets.append(torch.nn.functional.interpolate(d, size=size, mode='area'))
            masks.append(torch.nn.functional.interpolate(m, size=size, mode='area') > 0.999) # fully foreground
        target, mask = torch.cat(targets).to(opts.device), torch.cat(masks).to(opts.device)
        err = aligned_depth_error(depth, target, mask)
        valid = (mask.flatten(1).sum(1) >= 4).to(torch.float32)
        return torch.stack([err * valid, valid], dim=1)
    rows = metric_utils.compute_generated_rows(opts, errors, num_gen, batch_size, tag='depth_err renders')
    if opts.rank != 0:
        return dict(depth_err=float('nan'))
    err, valid = rows.T
    if valid.sum() == 0:
        raise ValueError('depth_err: no generated sample was paired with a real image that has foreground depth')
    return dict(depth_err=float(err.sum() / valid.sum()))

#----------------------------------------------------------------------------
