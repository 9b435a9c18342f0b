"""Metric protocols on tiny generators and files: NFS depth size for EG3D and 3DGP, the camera_w1 progress bar,
depth-map bit depth, and the default device."""

import os

import numpy as np
import PIL.Image
import pytest
import torch

import calc_metrics
import gen_utils
from dnnlib import registry
from metrics import camera_recovery, depth_error, metric_utils, non_flatness
from metrics.dataset_files import DatasetFiles
from tests._tiny_generators import tiny_3dgp_G, tiny_eg3d_G
from tests.metrics._metrics_helpers import ref_nfs

#----------------------------------------------------------------------------

@pytest.mark.parametrize('make_G', [tiny_eg3d_G, tiny_3dgp_G], ids=['eg3d', '3dgp'])
def test_nfs_renders_256_depth_for_both_families(make_G, monkeypatch):
    G = make_G()
    own_res, own_sr = G.neural_rendering_resolution, type(getattr(G, 'superresolution', None))
    assert own_res < 256 # the nets' own rendering resolution is not the protocol's
    seen = []
    real_scores = non_flatness.non_flatness_scores
    def spy(depth, near_far, num_bins):
        seen.append((depth.clone(), near_far))
        return real_scores(depth, near_far, num_bins)
    monkeypatch.setattr(non_flatness, 'non_flatness_scores', spy)
    torch.manual_seed(1) # EG3D's stratified ray samples and noise are random even in eval
    nfs = non_flatness.compute_nfs(metric_utils.MetricOptions(G=G, device='cpu'), num_gen=2, batch_size=2)

    assert len(seen) == 1 and seen[0][0].shape == (2, 1, 256, 256)
    near, far = seen[0][1]
    assert (near, far) == (G.rendering_kwargs['ray_start'], G.rendering_kwargs['ray_end'])
    assert nfs == pytest.approx(ref_nfs(seen[0][0], near, far), rel=1e-5)
    assert G.neural_rendering_resolution == own_res and type(getattr(G, 'superresolution', None)) is own_sr

    if not gen_utils.learns_camera(G): # EG3D: exactly its own 256^2 render from the frontal camera, not a resize
        z, _c = next(metric_utils.generated_batches(metric_utils.MetricOptions(G=G, device='cpu'), 2, labels=False))
        torch.manual_seed(1)
        with torch.no_grad():
            direct = gen_utils.generate(G, z, None, neural_rendering_resolution=256)['image_depth']
        G.neural_rendering_resolution = own_res # the direct call above remembered 256 (EG3D behaviour)
        torch.testing.assert_close(seen[0][0], direct)

#----------------------------------------------------------------------------

def test_camera_w1_reports_progress(tmp_path, capsys):
    from eg3d_ext.datasets import synthetic
    data = str(tmp_path / 'synthetic.zip')
    synthetic.build_synthetic(data, num_images=16, resolution=32, num_classes=3, workers=1, progress=False)
    registry.load_plugins(['eg3d_ext.plugin']) # the RGB-D loader that reads the class labels
    G = tiny_3dgp_G()
    dataset_kwargs = dict(calc_metrics.data_kwargs(data), resolution=G.img_resolution, use_labels=True)
    calls = []
    progress = metric_utils.ProgressMonitor(verbose=True, progress_fn=lambda cur, total: calls.append((cur, total)))
    opts = metric_utils.MetricOptions(G=G, dataset_kwargs=dataset_kwargs, device='cpu', progress=progress)
    res = camera_recovery.compute_camera_w1(opts, num_gen=48, batch_size=16)
    assert res['camera_w1'] > 0
    assert calls[0] == (0, 1000) and calls[-1] == (1000, 1000) # start and finish of the sub-range
    out = capsys.readouterr().out # the finished bar's summary line, as the other long metrics print
    assert 'camera_w1 cameras' in out and 'items 48' in out

#----------------------------------------------------------------------------

def _depth_files(tmp_path, depth_array):
    folder = tmp_path / 'rgbd'
    folder.mkdir()
    PIL.Image.fromarray(np.zeros([4, 4, 3], np.uint8)).save(folder / 'a.png')
    PIL.Image.fromarray(depth_array).save(folder / 'a_depth.png')
    return DatasetFiles(str(folder))

def test_decode_depth_16bit_png_with_small_codes(tmp_path):
    codes = np.arange(16, dtype=np.uint16).reshape(4, 4) * 10 # all < 256, but a 16-bit file
    files = _depth_files(tmp_path, codes)
    assert PIL.Image.open(os.path.join(files.path, 'a_depth.png')).mode in depth_error.PNG_16BIT_MODES
    depth, mask = depth_error._decode_depth(files, 'a.png', {})
    np.testing.assert_allclose(depth, codes / 65535.0)
    assert mask.all()
    info = dict(encoding='global_range', near=0.5, far=1.5)
    depth, mask = depth_error._decode_depth(files, 'a.png', info)
    np.testing.assert_allclose(depth, 0.5 + codes / 65535.0)
    assert mask.all() # no code reaches the 16-bit far code 65535

def test_decode_depth_8bit_png(tmp_path):
    codes = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    files = _depth_files(tmp_path, codes)
    depth, _mask = depth_error._decode_depth(files, 'a.png', {})
    np.testing.assert_allclose(depth, codes / 255.0)
    _depth, mask = depth_error._decode_depth(files, 'a.png', dict(encoding='global_range', near=0.5, far=1.5))
    np.testing.assert_array_equal(mask, codes < 255) # 8-bit far code is background

#----------------------------------------------------------------------------

def test_metric_options_default_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert metric_utils.MetricOptions(num_gpus=2, rank=1).device == torch.device('cuda', 1)
    assert metric_utils.MetricOptions().device == torch.device('cuda', 0)
    assert metric_utils.MetricOptions(device='cpu').device == torch.device('cpu')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert metric_utils.MetricOptions(num_gpus=2, rank=1).device == torch.device('cpu')

#----------------------------------------------------------------------------
