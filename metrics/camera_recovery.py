"""camera_w1: per-parameter Wasserstein-1 distance between a generator's cameras and a dataset's true cameras."""

import copy
import json
import math
import os
import zipfile
from typing import Dict, List, Optional

import numpy as np
import scipy.stats
import torch

from . import metric_utils

PARAMS = ('yaw', 'pitch', 'radius', 'fov', 'lookat') # see gen_utils.camera_to_params for their definitions

#----------------------------------------------------------------------------
# Ground truth stored with a data set (zip or folder in EG3D layout, dataset.json beside the images).

class DatasetFiles:
    """Read-only access to the members of an EG3D-layout zip or folder."""
    def __init__(self, path: str):
        if not isinstance(path, str) or not os.path.exists(path):
            raise ValueError(f'Dataset not found: {path!r}')
        self.path = path
        self._zip = zipfile.ZipFile(path) if os.path.isfile(path) else None
        if self._zip is not None:
            self.names = sorted(n for n in self._zip.namelist() if not n.endswith('/'))
        else:
            self.names = sorted(os.path.relpath(os.path.join(root, f), path).replace(os.sep, '/')
                                for root, _dirs, files in os.walk(path) for f in files)

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        with open(os.path.join(self.path, name), 'rb') as f:
            return f.read()

    def json(self) -> dict:
        if 'dataset.json' not in self.names:
            raise ValueError(f'{self.path} has no dataset.json')
        return json.loads(self.read('dataset.json'))

    def image_names(self) -> List[str]:
        """Image members in loader order, without the '<name>_depth.png' depth maps."""
        exts = ('.png', '.jpg', '.jpeg', '.bmp', '.webp')
        return [n for n in self.names if n.lower().endswith(exts) and not n.endswith('_depth.png')]

def dataset_path(opts: metric_utils.MetricOptions) -> str:
    path = opts.dataset_kwargs.get('path', None)
    if path is None:
        raise ValueError('This metric reads ground truth from the data set: pass --data')
    return path

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
    real = true_camera_params(dataset_path(opts), max_real)
    stats = metric_utils.FeatureStats(capture_all=True, max_items=num_gen)
    batches = metric_utils.generated_batches(opts, batch_size)
    while not stats.is_full():
        z, c = next(batches)
        with torch.no_grad():
            if gen_utils.learns_camera(G):
                cams = gen_utils.sample_cameras(G, z, c, camera_mode=opts.G_kwargs.get('camera_mode', 'learned'))
            elif c is not None and c.shape[1] == 25:
                cams = c
            else:
                raise ValueError('camera_w1 needs a generator that learns cameras (3DGP) or 25-d camera labels')
        stats.append_torch(cams.to(torch.float32), num_gpus=opts.num_gpus, rank=opts.rank)
    if opts.rank != 0:
        return {k: float('nan') for k in ['camera_w1'] + [f'camera_w1_{p}' for p in PARAMS]}
    return camera_w1_distances(gen_utils.camera_to_params(stats.get_all()), real)

#----------------------------------------------------------------------------
