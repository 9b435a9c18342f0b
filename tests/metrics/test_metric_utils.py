"""metric_utils under torch.distributed: two gloo ranks reproduce the single-process features and FID inputs."""

import os

import numpy as np
import torch

from metrics import metric_utils

INCEPTION = metric_utils.DETECTOR_URLS.inception

from _metrics_helpers import TinyImageG

#----------------------------------------------------------------------------

def _ddp_worker(rank, init_file, folder, out_file):
    import sys
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from metrics import metric_utils as mu
    torch.distributed.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=2)
    mu.register_detector('inception-2015-12-05', lambda: mu.TinyDetector(seed=1))
    opts = mu.MetricOptions(G=TinyImageG(), num_gpus=2, rank=rank, cache=False, device='cpu',
                            dataset_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=folder))
    real = mu.compute_feature_stats_for_dataset(opts, INCEPTION, dict(return_features=True), batch_size=3, capture_all=True)
    if rank == 0:
        np.save(out_file, real.get_all())
    torch.distributed.destroy_process_group()

def test_ddp_feature_extraction_matches_single_process(cache_dir, image_folder, tmp_path):
    """Two gloo ranks (items r, r+2, ...) gather the features back in dataset order."""
    metric_utils.register_detector('inception-2015-12-05', lambda: metric_utils.TinyDetector(seed=1))
    single = metric_utils.compute_feature_stats_for_dataset(metric_utils.MetricOptions(cache=False, dataset_kwargs=dict(
        class_name='training.dataset.ImageFolderDataset', path=image_folder)), INCEPTION, dict(return_features=True),
        capture_all=True).get_all()
    out_file = str(tmp_path / 'ddp.npy')
    torch.multiprocessing.spawn(_ddp_worker, args=(str(tmp_path / 'init'), image_folder, out_file), nprocs=2)
    np.testing.assert_allclose(np.load(out_file), single, rtol=1e-5, atol=1e-6)
