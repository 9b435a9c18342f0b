"""Read-only access to the files of a data set (zip or folder in EG3D layout), for metrics that read ground truth
stored beside the images (dataset.json cameras, '<name>_depth.png' maps) and for calc_metrics' loader choice."""

import json
import os
import zipfile
from typing import List

#----------------------------------------------------------------------------

class DatasetFiles:
    """The members of an EG3D-layout zip or folder, by '/'-separated path relative to its root."""
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

def dataset_path(dataset_kwargs: dict) -> str:
    """The data set's path from a metric's dataset options (ground-truth metrics need --data)."""
    path = dataset_kwargs.get('path', None)
    if path is None:
        raise ValueError('This metric reads ground truth from the data set: pass --data')
    return path

#----------------------------------------------------------------------------
