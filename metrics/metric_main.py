"""Metric registry (EG3D/StyleGAN API): register_metric, calc_metric, report_metric -> metric-<name>.jsonl."""

import json
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

import dnnlib
from dnnlib import registry

from . import camera_recovery
from . import depth_error
from . import frechet_inception_distance
from . import inception_score
from . import kernel_inception_distance
from . import metric_utils
from . import non_flatness
from . import precision_recall

#----------------------------------------------------------------------------
# Metrics are registered under the function name, both here and in dnnlib.registry (kind 'metric'), so that
# plugins can add metrics through the registry alone.

_metric_dict = dict() # name => fn

def register_metric(fn: Callable) -> Callable:
    assert callable(fn)
    _metric_dict[fn.__name__] = fn
    registry.register('metric', fn.__name__, fn)
    return fn

def _lookup(metric: str) -> Optional[Callable]:
    if metric in _metric_dict:
        return _metric_dict[metric]
    if metric in registry.names('metric'):
        return registry.resolve('metric', metric)
    return None

def is_valid_metric(metric: str) -> bool:
    return _lookup(metric) is not None

def list_valid_metrics() -> List[str]:
    return sorted(set(_metric_dict) | set(registry.names('metric')))

#----------------------------------------------------------------------------

def calc_metric(metric: str, **kwargs) -> dnnlib.EasyDict:
    """Compute a metric; kwargs go to MetricOptions. Results are broadcast from rank 0."""
    fn = _lookup(metric)
    if fn is None:
        raise ValueError(f'Unknown metric {metric!r}; valid metrics: {", ".join(list_valid_metrics())}')
    opts = metric_utils.MetricOptions(**kwargs)

    # Calculate.
    start_time = time.time()
    results = fn(opts)
    total_time = time.time() - start_time

    # Broadcast results.
    for key, value in list(results.items()):
        if opts.num_gpus > 1:
            value = torch.as_tensor(value, dtype=torch.float64, device=opts.device)
            torch.distributed.broadcast(tensor=value, src=0)
            value = float(value.cpu())
        results[key] = value

    # Decorate with metadata.
    return dnnlib.EasyDict(
        results=dnnlib.EasyDict(results),
        metric=metric,
        total_time=total_time,
        total_time_str=dnnlib.util.format_time(total_time),
        num_gpus=opts.num_gpus,
    )

#----------------------------------------------------------------------------

def report_metric(result_dict: dict, run_dir: Optional[str] = None, snapshot_pkl: Optional[str] = None) -> None:
    """Print one JSON line and append it to <run_dir>/metric-<name>.jsonl (atomically: temp file, fsync, rename)."""
    metric = result_dict['metric']
    assert is_valid_metric(metric)
    if run_dir is not None and snapshot_pkl is not None:
        snapshot_pkl = os.path.relpath(snapshot_pkl, run_dir)
    line = dict(result_dict, snapshot_pkl=snapshot_pkl, timestamp=time.time())
    print(json.dumps(line))
    if run_dir is not None and os.path.isdir(run_dir):
        dnnlib.util.append_jsonl(os.path.join(run_dir, f'metric-{metric}.jsonl'), line)

#----------------------------------------------------------------------------
# Detectors each metric loads, declared next to the metric, so that calc_metrics and train.py can check (or fetch)
# them before any work starts. Metrics without the declaration (e.g. from plugins) are assumed to need none.

def uses_detectors(*names: str) -> Callable[[Callable], Callable]:
    """Decorator: the metric loads metric_utils.DETECTOR_URLS[name] for each name ('inception', 'vgg16')."""
    def decorate(fn: Callable) -> Callable:
        fn.detector_urls = tuple(metric_utils.DETECTOR_URLS[name] for name in names)
        return fn
    return decorate

def detector_urls(metrics: Sequence[str]) -> List[str]:
    """URLs of the detectors the given (valid) metrics load, without repeats."""
    urls = [url for metric in metrics for url in getattr(_lookup(metric), 'detector_urls', ())]
    return list(dict.fromkeys(urls))

def missing_detectors(metrics: Sequence[str], detector_dir: Optional[str] = None) -> List[Tuple[str, str]]:
    """(file name, path where it belongs) of each detector the metrics need that is not on disk (detector_dir,
    else $EG3D_DETECTOR_DIR, else the download cache) and not injected. Downloads nothing."""
    return metric_utils.missing_detector_files(detector_urls(metrics), detector_dir)

#----------------------------------------------------------------------------
# Recommended metrics (EG3D). The '_full' ones use every real image, unflipped.

def _all_reals(opts: metric_utils.MetricOptions) -> metric_utils.MetricOptions:
    opts.dataset_kwargs.update(max_size=None, xflip=False)
    return opts

@register_metric
@uses_detectors('inception')
def fid50k_full(opts: metric_utils.MetricOptions) -> Dict[str, float]:
    """FID of 50k fakes against all reals."""
    return dict(fid50k_full=frechet_inception_distance.compute_fid(_all_reals(opts), max_real=None, num_gen=50000))

@register_metric
@uses_detectors('inception')
def kid50k_full(opts: metric_utils.MetricOptions) -> Dict[str, float]:
    """KID of 50k fakes against up to 1M reals, 100 subsets of 1000."""
    kid = kernel_inception_distance.compute_kid(_all_reals(opts), max_real=1000000, num_gen=50000, num_subsets=100,
                                                max_subset_size=1000)
    return dict(kid50k_full=kid)

@register_metric
@uses_detectors('vgg16')
def pr50k3_full(opts: metric_utils.MetricOptions) -> Dict[str, float]:
    """Precision and recall (k=3) of 50k fakes against up to 200k reals."""
    precision, recall = precision_recall.compute_pr(_all_reals(opts), max_real=200000, num_gen=50000, nhood_size=3,
                                                    row_batch_size=10000, col_batch_size=10000)
    return dict(pr50k3_full_precision=precision, pr50k3_full_recall=recall)

@register_metric
@uses_detectors('inception')
def is50k(opts: metric_utils.MetricOptions) -> Dict[str, float]:
    """Inception Score of 50k fakes, mean and std over 10 splits."""
    mean, std = inception_score.compute_is(_all_reals(opts), num_gen=50000, num_splits=10)
    return dict(is50k_mean=mean, is50k_std=std)

#----------------------------------------------------------------------------
# Legacy metrics (50k reals, xflip as configured).

@register_metric
@uses_detectors('inception')
def fid50k(opts: metric_utils.MetricOptions) -> Dict[str, float]:
    """FID of 50k fakes against the first 50k reals."""
    opts.dataset_kwargs.update(max_size=None)
    return dict(fid50k=frechet_inception_distance.compute_fid(opts, max_real=50000, num_gen=50000))

@register_metric
@uses_detectors('inception')
def kid50k(opts: metric_utils.MetricOptions) -> Dict[str, float]:
    """KID of 50k fakes against the first 50k reals."""
    opts.dataset_kwargs.update(max_size=None)
    kid = kernel_inception_distance.compute_kid(opts, max_real=50000, num_gen=50000, num_subsets=100,
                                                max_subset_size=1000)
    return dict(kid50k=kid)

@register_metric
@uses_detectors('vgg16')
def pr50k3(opts: metric_utils.MetricOptions) -> Dict[str, float]:
    """Precision and recall (k=3) of 50k fakes against the first 50k reals."""
    opts.dataset_kwargs.update(max_size=None)
    precision, recall = precision_recall.compute_pr(opts, max_real=50000, num_gen=50000, nhood_size=3,
                                                    row_batch_size=10000, col_batch_size=10000)
    return dict(pr50k3_precision=precision, pr50k3_recall=recall)

#----------------------------------------------------------------------------
# 3DGP metrics (3dgp-reference section 7) and our camera / geometry metrics for data sets with known truth.

@register_metric
@uses_detectors('inception')
def fid2k_full(opts: metric_utils.MetricOptions) -> Dict[str, float]:
    """3DGP's training-time FID: 2048 fakes against all reals."""
    return dict(fid2k_full=frechet_inception_distance.compute_fid(_all_reals(opts), max_real=None, num_gen=2048))

@register_metric
def nfs256(opts: metric_utils.MetricOptions) -> Dict[str, float]:
    """Non-flatness score of 256 depth maps rendered at 256^2 (see non_flatness.compute_nfs)."""
    return dict(nfs256=non_flatness.compute_nfs(opts, num_gen=256, num_bins=64, cut_quantile=0.5, batch_size=4,
                                                resolution=256))

@register_metric
def camera_w1(opts: metric_utils.MetricOptions) -> Dict[str, float]:
    """W1 distances of 4096 generated cameras to all of the data set's true cameras."""
    return camera_recovery.compute_camera_w1(opts, num_gen=4096, max_real=None)

@register_metric
def depth_err(opts: metric_utils.MetricOptions) -> Dict[str, float]:
    """Aligned depth RMSE of 1024 fakes against their nearest of up to 10k reals."""
    return depth_error.compute_depth_err(_all_reals(opts), num_gen=1024, max_real=10000)

#----------------------------------------------------------------------------
