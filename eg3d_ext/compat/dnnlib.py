"""`src.dnnlib` / `src.dnnlib.util` of 3DGP/EpiGRAF pickles: our dnnlib.util plus TensorGroup (EG3D's dnnlib has none)."""

from typing import Any, List

import torch

from dnnlib.util import *  # noqa: F401,F403 -- everything 3DGP's dnnlib.util offers under the same names
from dnnlib.util import EasyDict

#----------------------------------------------------------------------------

class TensorGroup(EasyDict):
    """A batch of named tensors (e.g. camera params: angles [B,3], fov [B], radius [B], look_at [B,3]) indexed,
    moved and concatenated together. Pickled as a dict: its items, plus `_length` (batch size) and `shape` stored
    as items, which is how 3DGP's own class stores them; non-tensor items ride along unchanged."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        tensors = [v for v in self.values() if isinstance(v, torch.Tensor)]
        if tensors and '_length' not in self:
            lengths = {len(v) for v in tensors if v.ndim > 0}
            if len(lengths) > 1:
                raise ValueError(f'TensorGroup: tensors differ in batch size: {sorted(lengths)}')
            self['_length'] = lengths.pop() if lengths else 0
            self['shape'] = (self['_length'],)

    def _tensors(self) -> dict:
        return {k: v for k, v in self.items() if k not in ('_length', 'shape')}

    def __len__(self) -> int:
        return int(self['_length']) if '_length' in self else dict.__len__(self)

    def __getitem__(self, key):
        if isinstance(key, str):
            return dict.__getitem__(self, key)
        return TensorGroup({k: (v[key] if isinstance(v, torch.Tensor) and v.ndim > 0 else v) for k, v in self._tensors().items()})

    def _map(self, fn) -> 'TensorGroup':
        return TensorGroup({k: (fn(v) if isinstance(v, torch.Tensor) else v) for k, v in self._tensors().items()})

    def to(self, *args, **kwargs) -> 'TensorGroup':
        return self._map(lambda v: v.to(*args, **kwargs))

    def cpu(self) -> 'TensorGroup':
        return self._map(lambda v: v.cpu())

    def detach(self) -> 'TensorGroup':
        return self._map(lambda v: v.detach())

    def clone(self) -> 'TensorGroup':
        return self._map(lambda v: v.clone())

    def split(self, size: int) -> List['TensorGroup']:
        return [self[i:i + size] for i in range(0, len(self), size)]

    @property
    def device(self) -> Any:
        return next(v.device for v in self.values() if isinstance(v, torch.Tensor))

    @staticmethod
    def cat(groups: List['TensorGroup'], dim: int = 0) -> 'TensorGroup':
        keys = groups[0]._tensors().keys()
        return TensorGroup({k: torch.cat([g[k] for g in groups], dim=dim) for k in keys})

#----------------------------------------------------------------------------
