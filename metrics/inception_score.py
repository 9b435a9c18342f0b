"""Inception Score (Salimans et al. 2016): exp(E KL(p(y|x) || p(y))) over splits, as in EG3D/StyleGAN."""

from typing import Tuple

import numpy as np

from . import metric_utils

#----------------------------------------------------------------------------

def inception_score(probs: np.ndarray, num_splits: int = 10) -> Tuple[float, float]:
    """Mean and std over `num_splits` consecutive splits of exp(mean_x KL(p(y|x) || p(y)))."""
    probs = np.asarray(probs, np.float64)
    n = probs.shape[0]
    if n < num_splits:
        raise ValueError(f'Inception Score needs at least num_splits={num_splits} samples, got {n}')
    scores = []
    for i in range(num_splits):
        part = probs[i * n // num_splits: (i + 1) * n // num_splits]
        py = np.mean(part, axis=0, keepdims=True)
        with np.errstate(divide='ignore', invalid='ignore'): # 0 * log 0 = 0 (EG3D would give NaN there)
            kl = np.where(part > 0, part * (np.log(part) - np.log(py)), 0.0)
        scores.append(np.exp(np.mean(np.sum(kl, axis=1))))
    return float(np.mean(scores)), float(np.std(scores))

#----------------------------------------------------------------------------

def compute_is(opts: metric_utils.MetricOptions, num_gen: int, num_splits: int) -> Tuple[float, float]:
    """(mean, std) over `num_splits` splits of the Inception Score of `num_gen` fakes (class probabilities without
    the output bias, as the original). Returns NaNs on ranks other than 0."""
    detector_url = metric_utils.DETECTOR_URLS.inception
    detector_kwargs = dict(no_output_bias=True) # Match the original implementation by not applying bias in the softmax layer.

    gen_probs = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_url=detector_url, detector_kwargs=detector_kwargs,
        capture_all=True, max_items=num_gen).get_all()
    if opts.rank != 0:
        return float('nan'), float('nan')
    return inception_score(gen_probs, num_splits)

#----------------------------------------------------------------------------
