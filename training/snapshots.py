"""Snapshots written during training: image grids (reals.png, fakes<kimg>.png) and network snapshot pickles."""

import copy
import os
import pickle
from typing import Optional, Tuple

import numpy as np
import PIL.Image
import torch

import dnnlib
import safe_weights
from torch_utils import misc
from training import checkpoint

#----------------------------------------------------------------------------
# Image grids.

def setup_snapshot_image_grid(training_set, random_seed: int = 0, grid_size: Optional[tuple] = None):
    """Pick grid cells from the training set: random for unlabeled data, else one label group per row."""
    rnd = np.random.RandomState(random_seed)
    if grid_size is None:
        gw = np.clip(7680 // training_set.image_shape[2], 7, 32)
        gh = np.clip(4320 // training_set.image_shape[1], 4, 32)
    else:
        gw, gh = grid_size
    gw, gh = int(gw), int(gh)

    if not training_set.has_labels:
        all_indices = list(range(len(training_set)))
        rnd.shuffle(all_indices)
        grid_indices = [all_indices[i % len(all_indices)] for i in range(gw * gh)]
    else:
        groups = {}  # label -> [idx, ...]
        for idx in range(len(training_set)):
            groups.setdefault(tuple(training_set.get_details(idx).raw_label.flat[::-1]), []).append(idx)
        order = list(groups.keys())
        rnd.shuffle(order)
        for label in order:
            rnd.shuffle(groups[label])
        grid_indices = []
        for y in range(gh):
            label = order[y % len(order)]
            indices = groups[label]
            grid_indices += [indices[x % len(indices)] for x in range(gw)]
            groups[label] = indices[gw % len(indices):] + indices[:gw % len(indices)]  # rotate for the next use

    items = [training_set[i] for i in grid_indices]
    images = np.stack([item[0] for item in items])
    labels = np.stack([item[1] for item in items])
    return (gw, gh), images, labels

def save_image_grid(img: np.ndarray, fname: str, drange, grid_size) -> None:
    """[N,C,H,W] array in drange -> one PNG of gh rows x gw columns (written atomically)."""
    lo, hi = drange
    img = np.asarray(img, dtype=np.float32)
    img = (img - lo) * (255 / max(hi - lo, 1e-8))
    img = np.rint(img).clip(0, 255).astype(np.uint8)
    gw, gh = grid_size
    _N, C, H, W = img.shape
    img = img.reshape(gh, gw, C, H, W).transpose(0, 3, 1, 4, 2).reshape(gh * H, gw * W, C)
    if C not in (1, 3):
        img = img[:, :, :3] if C > 3 else img[:, :, :1]
    with dnnlib.util.atomic_write(fname, 'wb') as f:
        PIL.Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img, 'L' if img.shape[2] == 1 else 'RGB').save(f, format='png')

def save_fake_grids(G_ema: torch.nn.Module, grid_z: list, grid_c: list, run_dir: str, tag: str, grid_size) -> None:
    """fakes<tag>.png from G_ema on the fixed grid latents, plus _raw and _depth grids when G renders them."""
    with torch.no_grad():
        out = [G_ema(z=z, c=c, noise_mode='const') for z, c in zip(grid_z, grid_c)]
    images = torch.cat([o['image'].cpu() for o in out]).numpy()
    save_image_grid(images, os.path.join(run_dir, f'fakes{tag}.png'), drange=[-1, 1], grid_size=grid_size)
    if 'image_raw' in out[0]:
        images_raw = torch.cat([o['image_raw'].cpu() for o in out]).numpy()
        save_image_grid(images_raw, os.path.join(run_dir, f'fakes{tag}_raw.png'), drange=[-1, 1], grid_size=grid_size)
    if 'image_depth' in out[0]:
        images_depth = -torch.cat([o['image_depth'].cpu() for o in out]).numpy()
        save_image_grid(images_depth, os.path.join(run_dir, f'fakes{tag}_depth.png'),
                        drange=[images_depth.min(), images_depth.max()], grid_size=grid_size)

#----------------------------------------------------------------------------
# Network snapshots.

def snapshot_module(module: torch.nn.Module) -> torch.nn.Module:
    """Frozen CPU deep copy of a training network, as stored in network snapshots."""
    module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
    # .cpu() moves parameters and buffers only; plain tensor attributes (e.g. the renderer's plane_axes) would
    # keep a CUDA location in the pickle and fail to load on CPU-only machines.
    for m in module.modules():
        for k, v in list(vars(m).items()):
            if isinstance(v, torch.Tensor) and not k.startswith('_') and v.device.type != 'cpu':
                setattr(m, k, v.cpu())
    return module

def save_network_snapshot(run_dir: str, cur_nimg: int, training_set_kwargs: dict, modules: dict, rank: int = 0,
                          num_gpus: int = 1, write_safetensors: bool = False) -> Tuple[str, dict]:
    """network-snapshot-<kimg>.pkl = dict(training_set_kwargs, G, D, G_ema, augment_pipe) as CPU copies (written by
    rank 0, atomically; optionally a weights-only .safetensors beside it). Returns (path, the snapshot dict)."""
    snapshot_data = dict(training_set_kwargs=dict(training_set_kwargs))
    for name, module in modules.items():
        if module is not None:
            if num_gpus > 1:
                misc.check_ddp_consistency(module, ignore_regex=r'.*\.[^.]+_(avg|ema)')
            module = snapshot_module(module)
        snapshot_data[name] = module
        del module  # conserve memory
    snapshot_pkl = os.path.join(run_dir, f'network-snapshot-{cur_nimg // 1000:06d}.pkl')
    if rank == 0:
        with dnnlib.util.atomic_write(snapshot_pkl, 'wb') as f:
            pickle.dump(snapshot_data, f)
            checkpoint.test_write_hook(snapshot_pkl)
        if write_safetensors:
            safe_weights.save_safetensors(snapshot_data, snapshot_pkl[:-len('.pkl')] + '.safetensors')
    return snapshot_pkl, snapshot_data

#----------------------------------------------------------------------------
