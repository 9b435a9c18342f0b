"""calc_metrics.py: a missing detector is one CLI error line for any --gpus, found before workers are spawned."""

import os

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import calc_metrics
from tests._tiny_generators import tiny_3dgp_G, write_pickle

#----------------------------------------------------------------------------

@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache')) # no cached detector from elsewhere
    monkeypatch.setenv('DNNLIB_OFFLINE', '1')
    monkeypatch.delenv('EG3D_DETECTOR_DIR', raising=False)
    monkeypatch.setattr(torch.multiprocessing, 'spawn', lambda *a, **k: pytest.fail('workers spawned'))
    data = tmp_path / 'images'
    data.mkdir()
    for i in range(4):
        PIL.Image.fromarray(np.full([32, 32, 3], 40 * i, np.uint8)).save(data / f'{i}.png')
    (tmp_path / 'detectors').mkdir()
    return write_pickle(tiny_3dgp_G(), tmp_path / 'net.pkl'), str(data), str(tmp_path / 'detectors')

@pytest.mark.parametrize('with_dir', [True, False], ids=['detector-dir', 'offline-cache'])
def test_missing_detector_same_error_for_one_and_two_gpus(setup, with_dir, monkeypatch):
    pkl, data, detector_dir = setup
    monkeypatch.setenv('EG3D_TRUST_PICKLES', '1') # the once-per-process pickle warning would differ between the calls
    outputs = []
    for gpus in (1, 2):
        args = ['--network', pkl, '--metrics', 'fid2k_full', '--data', data, '--gpus', str(gpus), '--device', 'cpu']
        result = CliRunner().invoke(calc_metrics.calc_metrics, args + (['--detector-dir', detector_dir] if with_dir else []))
        assert result.exit_code == 1 and result.exception is not None and isinstance(result.exception, SystemExit)
        outputs.append(result.output)
    assert outputs[0] == outputs[1]
    error = [line for line in outputs[0].splitlines() if line.startswith('Error:')]
    assert len(error) == 1 and 'inception-2015-12-05.pkl' in error[0] and '--detector-dir' in error[0]
    assert (detector_dir in error[0]) == with_dir
    assert 'Traceback' not in outputs[0]

def test_bad_network_reported_before_missing_detectors(setup, tmp_path):
    _, data, _ = setup
    os.makedirs(tmp_path / 'empty', exist_ok=True)
    result = CliRunner().invoke(calc_metrics.calc_metrics, ['--network', str(tmp_path / 'nope.pkl'), '--metrics', 'fid2k_full',
                                                            '--data', data, '--detector-dir', str(tmp_path / 'empty')])
    assert result.exit_code == 1 and 'Cannot load --network' in result.output and 'inception' not in result.output

#----------------------------------------------------------------------------
