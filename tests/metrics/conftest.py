"""Fixtures for the metric tests: a private offline detector cache and a folder of random images."""

import numpy as np
import PIL.Image
import pytest
from metrics import metric_utils

#----------------------------------------------------------------------------

@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """Private dnnlib cache, no downloads, no leftover injected detectors."""
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.setenv('DNNLIB_OFFLINE', '1')
    monkeypatch.delenv(metric_utils.DETECTOR_DIR_ENV, raising=False)
    metric_utils._feature_detector_cache.clear()
    yield tmp_path / 'cache'
    metric_utils.register_detector('inception-2015-12-05', None)
    metric_utils._feature_detector_cache.clear()

@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.RandomState(0)
    folder = tmp_path / 'images'
    folder.mkdir()
    for i in range(10):
        PIL.Image.fromarray(rng.randint(0, 256, size=[16, 16, 3], dtype=np.uint8)).save(folder / f'img{i:03d}.png')
    return str(folder)
