"""camera_w1: per-parameter Wasserstein-1 distance between a generator's cameras and a dataset's true cameras."""

import copy
import math
from typing import Dict, Optional

import numpy as np
import scipy.stats
import torch

from . import metric_utils
from .dataset_files import DatasetFiles, dataset_path

PARAMS = ('yaw', 'pitch', 'radius', 'fov', 'lookat') # see gen_utils.camera_to_params for their definitions

#----------------------------------------------------------------------------

def true_camera_params(path: str, max_items: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Camera parameters from dataset.json "cameras": [[fname, {..., "c": [25 floats]}], ...] (the synthetic set)
    or [[fname, [25 floats]], ...]; converted through c25 exactly like the generator's cameras."""
    import gen_utils
    cams = DatasetFiles(path).json().get('cameras', None)
    if not cams:
        raise ValueError(f'{path}: dataset.json has no "cameras" entry; camera_w1 needs a data set with known '
                         f'cameras, such as the synthetic set')
    entries = [e[1] if isinstance(e, (list, tuple)) and len(e) == 2 and isinstance(e[0], str) else e for e in cams]
    c25 = []
    for e in entries[:max_items]:
        c = e.get('c', None) if isinstance(e, dict) else e
        if c is None or len(c) != 25:
            raise ValueError(f'{path}: each "cameras" entry needs 25 EG3D label floats (a list or a "c" key)')
        c25.append(c)
    return gen_utils.camera_to_params(np.asarray(c25, dtype=np.float64))

#----------------------------------------------------------------------------

def camera_w1_distances(gen: Dict[str, np.ndarray], real: Dict[str, np.ndarray]) -> Dict[str, float]:
    """scipy.stats.wasserstein_distance per parameter, plus 'camera_w1' = mean over yaw, pitch and fov (all in
    radians), the angles a camera generator has to learn."""
    out = {f'camera_w1_{k}': float(scipy.stats.wasserstein_distance(gen[k], real[k])) for k in PARAMS}
    out['camera_w1'] = float(np.mean([out['camera_w1_yaw'], out['camera_w1_pitch'],
                                      math.radians(out['camera_w1_fov'])]))
    return out

def compute_camera_w1(opts: metric_utils.MetricOptions, num_gen: int, max_real: Optional[int] = None,
                      batch_size: int = 64) -> Dict[str, float]:
    """3DGP nets: cameras of the camera generator (prior -> posterior) for dataset classes; EG3D nets: the dataset
    labels they are rendered with in the image metrics (needs 25-d camera labels)."""
    import gen_utils
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    real = true_camera_params(dataset_path(opts.dataset_kwargs), max_real)
    def cameras(z: torch.Tensor, c: Optional[torch.Tensor]) -> torch.Tensor:
        if gen_utils.learns_camera(G):
            return gen_utils.sample_cameras(G, z, c, camera_mode=opts.G_kwargs.get('camera_mode', 'learned'))
        if c is not None and c.shape[1] == 25:
            return c
        raise ValueError('camera_w1 needs a generator that learns cameras (3DGP) or 25-d camera labels')
    gen = metric_utils.compute_generated_rows(opts, cameras, num_gen, batch_size, tag='camera_w1 cameras')
    if opts.rank != 0:
        return {k: float('nan') for k in ['camera_w1'] + [f'camera_w1_{p}' for p in PARAMS]}
    return camera_w1_distances(gen_utils.camera_to_params(gen), real)

#----------------------------------------------------------------------------
