"""Detector loading (missing file -> clear error, injected tiny detector, local dir) and the feature pipeline."""

import os
import pickle

import numpy as np
import PIL.Image
import pytest
import torch

import dnnlib
from metrics import frechet_inception_distance, metric_main, metric_utils
from _metrics_helpers import TinyImageG

INCEPTION = metric_utils.DETECTOR_URLS.inception

#----------------------------------------------------------------------------

class CountingDetector(metric_utils.TinyDetector):
    calls = 0
    def forward(self, img, **kwargs):
        CountingDetector.calls += 1
        return super().forward(img, **kwargs)

#----------------------------------------------------------------------------

def test_missing_detector_names_file_and_place(cache_dir, tmp_path):
    empty = tmp_path / 'detectors'
    empty.mkdir()
    with pytest.raises(dnnlib.util.MissingWeightsError) as info:
        metric_utils.get_feature_detector(INCEPTION, detector_dir=str(empty))
    msg = str(info.value)
    assert 'inception-2015-12-05.pkl' in msg and str(empty) in msg and INCEPTION in msg

def test_missing_detector_without_dir_is_clear_offline(cache_dir):
    with pytest.raises(dnnlib.util.MissingWeightsError) as info:
        metric_utils.get_feature_detector(metric_utils.DETECTOR_URLS.vgg16)
    msg = str(info.value)
    assert 'vgg16.pkl' in msg and '--detector-dir' in msg and metric_utils.DETECTOR_DIR_ENV in msg

def test_missing_detectors_lists_files_without_downloading(cache_dir, tmp_path, monkeypatch):
    folder = tmp_path / 'detectors'
    folder.mkdir()
    monkeypatch.setattr(dnnlib.util, 'open_url', lambda *a, **k: pytest.fail('must not download'))
    want = [('inception-2015-12-05.pkl', str(folder / 'inception-2015-12-05.pkl'))]
    assert metric_main.missing_detectors(['fid50k_full', 'kid50k_full', 'nfs256'], str(folder)) == want # no repeats
    assert metric_main.missing_detectors(['pr50k3_full'], str(folder)) == [('vgg16.pkl', str(folder / 'vgg16.pkl'))]
    assert metric_main.missing_detectors(['nfs256', 'camera_w1', 'depth_err'], str(folder)) == [] # need none
    # Without a folder the file belongs in the download cache.
    cached = dnnlib.util.url_cache_path(INCEPTION)
    assert metric_main.missing_detectors(['fid2k_full']) == [('inception-2015-12-05.pkl', cached)]
    monkeypatch.setenv(metric_utils.DETECTOR_DIR_ENV, str(folder)) # ... or in $EG3D_DETECTOR_DIR
    assert metric_main.missing_detectors(['fid2k_full']) == want
    (folder / 'inception-2015-12-05.pkl').write_bytes(b'')
    assert metric_main.missing_detectors(['fid2k_full', 'is50k']) == []
    metric_utils.register_detector('vgg16', lambda: metric_utils.TinyDetector(seed=0)) # injected: never missing
    try:
        assert metric_main.missing_detectors(['pr50k3_full'], str(folder)) == []
    finally:
        metric_utils.register_detector('vgg16', None)

def test_detector_loaded_from_env_dir(cache_dir, tmp_path, monkeypatch):
    folder = tmp_path / 'detectors'
    folder.mkdir()
    with open(folder / 'inception-2015-12-05.pkl', 'wb') as f:
        pickle.dump(metric_utils.TinyDetector(seed=3), f)
    monkeypatch.setenv(metric_utils.DETECTOR_DIR_ENV, str(folder))
    det = metric_utils.get_feature_detector(INCEPTION)
    img = torch.randint(0, 256, [2, 3, 16, 16], dtype=torch.uint8)
    torch.testing.assert_close(det(img, return_features=True), metric_utils.TinyDetector(seed=3)(img, return_features=True).detach())

def test_injected_detector_dataset_stats_and_cache(cache_dir, image_folder):
    metric_utils.register_detector('inception-2015-12-05', lambda: CountingDetector(seed=1))
    opts = metric_utils.MetricOptions(dataset_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=image_folder))
    CountingDetector.calls = 0
    stats = metric_utils.compute_feature_stats_for_dataset(opts, INCEPTION, dict(return_features=True),
        batch_size=4, capture_all=True, capture_mean_cov=True)
    assert CountingDetector.calls == 3 # 10 images in batches of 4

    # Same features as running the detector directly on the decoded images.
    images = np.stack([np.asarray(PIL.Image.open(os.path.join(image_folder, f))) for f in sorted(os.listdir(image_folder))])
    direct = CountingDetector(seed=1)(torch.from_numpy(images).permute(0, 3, 1, 2), return_features=True).detach()
    np.testing.assert_allclose(stats.get_all(), direct.numpy(), rtol=1e-5, atol=1e-6)
    mean, cov = stats.get_mean_cov()
    np.testing.assert_allclose(mean, direct.double().numpy().mean(0), rtol=1e-5, atol=1e-6)

    # Second call: served from the cache file (atomic pickle), the detector is not run again.
    assert len(os.listdir(cache_dir / 'gan-metrics')) == 1
    CountingDetector.calls = 0
    again = metric_utils.compute_feature_stats_for_dataset(opts, INCEPTION, dict(return_features=True),
        batch_size=4, capture_all=True, capture_mean_cov=True)
    assert CountingDetector.calls == 0
    np.testing.assert_array_equal(again.get_all(), stats.get_all())

    # A different injected detector (other weights) must not reuse those statistics.
    metric_utils.register_detector('inception-2015-12-05', lambda: CountingDetector(seed=2))
    other = metric_utils.compute_feature_stats_for_dataset(opts, INCEPTION, dict(return_features=True),
        batch_size=4, capture_all=True)
    assert not np.allclose(other.get_all(), stats.get_all())
    assert len(os.listdir(cache_dir / 'gan-metrics')) == 2

def test_fid_end_to_end_with_tiny_detector(cache_dir, image_folder):
    metric_utils.register_detector('inception-2015-12-05', lambda: metric_utils.TinyDetector(seed=1))
    G = TinyImageG()
    opts = metric_utils.MetricOptions(G=G, dataset_kwargs=dict(class_name='training.dataset.ImageFolderDataset',
                                                               path=image_folder), cache=False)
    fid = frechet_inception_distance.compute_fid(opts, max_real=None, num_gen=24)
    real = metric_utils.compute_feature_stats_for_dataset(opts, INCEPTION, dict(return_features=True),
                                                          capture_mean_cov=True).get_mean_cov()
    fake = metric_utils.compute_feature_stats_for_generator(opts, INCEPTION, dict(return_features=True),
                                                            capture_mean_cov=True, max_items=24).get_mean_cov()
    assert np.isfinite(fid) and fid > 0
    assert fid == pytest.approx(frechet_inception_distance.frechet_distance(*fake, *real), rel=1e-9) # same seeded fakes

def test_calc_and_report_metric_jsonl(cache_dir, image_folder, tmp_path, monkeypatch):
    metric_utils.register_detector('inception-2015-12-05', lambda: metric_utils.TinyDetector(seed=1))
    real_compute_fid = frechet_inception_distance.compute_fid # keep fid2k_full's code path, with 16 fakes
    monkeypatch.setattr(metric_main.frechet_inception_distance, 'compute_fid',
                        lambda opts, max_real, num_gen: real_compute_fid(opts, max_real, 16))
    res = metric_main.calc_metric('fid2k_full', G=TinyImageG(), dataset_kwargs=dict(
        class_name='training.dataset.ImageFolderDataset', path=image_folder))
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    metric_main.report_metric(res, run_dir=str(run_dir), snapshot_pkl=str(run_dir / 'network-snapshot-000000.pkl'))
    metric_main.report_metric(res, run_dir=str(run_dir), snapshot_pkl=str(run_dir / 'network-snapshot-000004.pkl'))
    import json
    lines = (run_dir / 'metric-fid2k_full.jsonl').read_text().splitlines()
    assert len(lines) == 2
    entry = json.loads(lines[1])
    assert entry['metric'] == 'fid2k_full' and entry['snapshot_pkl'] == 'network-snapshot-000004.pkl'
    assert set(entry) >= {'results', 'total_time', 'total_time_str', 'num_gpus', 'timestamp'}
    assert entry['results']['fid2k_full'] == pytest.approx(res.results.fid2k_full)

def test_registry_lists_metrics():
    names = metric_main.list_valid_metrics()
    for name in ('fid50k_full', 'fid2k_full', 'kid50k_full', 'pr50k3_full', 'is50k', 'nfs256', 'camera_w1', 'depth_err'):
        assert name in names and metric_main.is_valid_metric(name)
    assert not metric_main.is_valid_metric('fid_nonexistent')
    with pytest.raises(ValueError, match='Unknown metric'):
        metric_main.calc_metric('fid_nonexistent')

#----------------------------------------------------------------------------
