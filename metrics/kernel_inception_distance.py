"""Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with a cubic polynomial kernel, as in EG3D."""

from typing import Optional

import numpy as np

from . import metric_utils

#----------------------------------------------------------------------------

def kernel_distance(real_features: np.ndarray, gen_features: np.ndarray, num_subsets: int = 100,
                    max_subset_size: int = 1000, rng: Optional[np.random.RandomState] = None) -> float:
    """Mean over random subsets (size m, without replacement) of the unbiased MMD^2 with k(x,y) = (x.y/d + 1)^3."""
    rng = np.random if rng is None else rng
    real_features = np.asarray(real_features, np.float64)
    gen_features = np.asarray(gen_features, np.float64)
    d = real_features.shape[1]
    m = min(min(real_features.shape[0], gen_features.shape[0]), max_subset_size)
    if m < 2:
        raise ValueError('KID needs at least 2 real and 2 generated samples')
    t = 0
    for _subset_idx in range(num_subsets):
        x = gen_features[rng.choice(gen_features.shape[0], m, replace=False)]
        y = real_features[rng.choice(real_features.shape[0], m, replace=False)]
        a = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
        b = (x @ y.T / d + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(t / num_subsets / m)

#----------------------------------------------------------------------------

def compute_kid(opts: metric_utils.MetricOptions, max_real: Optional[int], num_gen: int, num_subsets: int,
                max_subset_size: int) -> float:
    """KID between Inception pool features of `num_gen` fakes and up to `max_real` reals, averaged over
    `num_subsets` subsets of at most `max_subset_size` (seeded by opts.seed). Returns NaN on ranks other than 0."""
    detector_url = metric_utils.DETECTOR_URLS.inception
    detector_kwargs = dict(return_features=True)

    real_features = metric_utils.compute_feature_stats_for_dataset(
        opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs,
        rel_lo=0, rel_hi=0, capture_all=True, max_items=max_real).get_all()
    gen_features = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs,
        rel_lo=0, rel_hi=1, capture_all=True, max_items=num_gen).get_all()
    if opts.rank != 0:
        return float('nan')
    return kernel_distance(real_features, gen_features, num_subsets, max_subset_size,
                           rng=np.random.RandomState(opts.seed))

#----------------------------------------------------------------------------
