"""Metric math against independent computations: FID, KID, precision/recall, IS, NFS, camera W1, depth error."""

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from metrics import camera_recovery, depth_error, frechet_inception_distance, inception_score
from metrics import kernel_inception_distance, non_flatness, precision_recall
from metrics.metric_utils import FeatureStats

#----------------------------------------------------------------------------

def _features(n, d, shift=0.0, scale=1.0, seed=0):
    rng = np.random.RandomState(seed)
    mix = np.random.RandomState(1234).randn(d, d) / np.sqrt(d) # correlated features; same distribution for all seeds
    return (rng.randn(n, d) @ mix) * scale + shift

def test_feature_stats_mean_cov_matches_numpy():
    x = _features(300, 7, shift=1.5)
    stats = FeatureStats(capture_all=True, capture_mean_cov=True, max_items=250)
    for chunk in np.array_split(x, 7):
        stats.append(chunk)
    mean, cov = stats.get_mean_cov()
    assert stats.num_items == 250 and stats.is_full()
    np.testing.assert_allclose(mean, x[:250].mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cov, np.cov(x[:250], rowvar=False, bias=True), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats.get_all(), x[:250].astype(np.float32))

def test_fid_matches_scipy_sqrtm():
    a, b = _features(400, 16, seed=1), _features(400, 16, shift=0.3, scale=1.4, seed=2)
    mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(covmean))
    got = frechet_inception_distance.frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(expected, rel=1e-6)
    assert expected > 1.0 # the two sets differ, so this is not a 0 == 0 check
    assert frechet_inception_distance.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-8)

def test_fid_rejects_mismatched_stats():
    with pytest.raises(ValueError, match='shape'):
        frechet_inception_distance.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))

def test_kid_matches_direct_unbiased_mmd():
    x, y = _features(40, 8, seed=3), _features(40, 8, shift=0.5, seed=4) # gen, real
    d = x.shape[1]
    k = lambda u, v: (np.dot(u, v) / d + 1) ** 3
    m = len(x)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    expected = kxx + kyy - 2 * kxy
    # One subset of the full size = every sample exactly once: the estimator reduces to the direct formula.
    got = kernel_inception_distance.kernel_distance(y, x, num_subsets=1, max_subset_size=m, rng=np.random.RandomState(0))
    assert got == pytest.approx(expected, rel=1e-9)
    assert expected > 0.01
    # Two independent draws from the same distribution score far lower than the shifted pair.
    same = kernel_inception_distance.kernel_distance(_features(200, 8, seed=10), _features(200, 8, seed=3),
                                                     num_subsets=5, max_subset_size=100, rng=np.random.RandomState(0))
    assert abs(same) < 0.2 * expected

def _direct_precision_recall(real, gen, k):
    def radii(feats):
        dist = np.linalg.norm(feats[:, None] - feats[None], axis=-1)
        return np.sort(dist, axis=1)[:, k] # k-th neighbour, index 0 is the point itself
    def coverage(manifold, probes):
        r = radii(manifold)
        dist = np.linalg.norm(probes[:, None] - manifold[None], axis=-1)
        return float(np.mean((dist <= r[None]).any(axis=1)))
    return coverage(real, gen), coverage(gen, real)

def test_precision_recall_matches_direct_knn():
    real = _features(60, 6, seed=5)
    gen = _features(50, 6, shift=0.8, scale=0.5, seed=6) # a shifted, narrower set: precision != recall
    # Round to float16 first, as the metric does, so that both compute on the same values.
    r16, g16 = [torch.from_numpy(a).to(torch.float16) for a in (real, gen)]
    expected = _direct_precision_recall(r16.double().numpy(), g16.double().numpy(), 3)
    got = precision_recall.precision_recall(r16, g16, nhood_size=3, row_batch_size=17, col_batch_size=13)
    assert got == pytest.approx(expected, abs=1.5 / 50) # fp16 distances may flip a borderline point
    assert expected[0] != expected[1]

def test_compute_distances_batches_equal_cdist():
    a, b = torch.randn(9, 5), torch.randn(23, 5)
    d = precision_recall.compute_distances(a, b, col_batch_size=4)
    torch.testing.assert_close(d, torch.cdist(a, b))

def test_inception_score_matches_direct_formula():
    rng = np.random.RandomState(7)
    logits = rng.randn(100, 10) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    scores = []
    for part in np.split(probs, 5):
        py = part.mean(0)
        scores.append(math.exp(np.mean([scipy.stats.entropy(p, py) for p in part])))
    mean, std = inception_score.inception_score(probs, num_splits=5)
    assert mean == pytest.approx(np.mean(scores), rel=1e-9)
    assert std == pytest.approx(np.std(scores), rel=1e-9)
    # Identical one-hot predictions carry no information: IS = 1. Uniformly spread one-hot classes: IS = #classes.
    assert inception_score.inception_score(np.tile(np.eye(10)[:1], (20, 1)), num_splits=2)[0] == pytest.approx(1.0)
    assert inception_score.inception_score(np.tile(np.eye(10), (2, 1)), num_splits=2)[0] == pytest.approx(10.0)

#----------------------------------------------------------------------------

def test_nfs_flat_and_known_non_flat():
    near_far = (0.75, 1.25)
    flat = torch.full([2, 1, 16, 16], 1.0)
    assert non_flatness.non_flatness_scores(flat, near_far).tolist() == pytest.approx([1.0, 1.0]) # entropy 0
    # Two planes (half the pixels near, half far): entropy ln 2 -> NFS 2.
    two = torch.full([1, 1, 16, 16], 0.8)
    two[..., 8:] = 1.2
    assert float(non_flatness.non_flatness_scores(two, near_far)[0]) == pytest.approx(2.0, rel=1e-6)
    # Depth spread evenly over all 64 bins (4 pixels each): NFS = 64, the maximum.
    ramp = (0.75 + (torch.arange(256, dtype=torch.float64) // 4 + 0.5) / 64 * 0.5).reshape(1, 1, 16, 16)
    assert float(non_flatness.non_flatness_scores(ramp, near_far)[0]) == pytest.approx(64.0, rel=1e-5)
    # Values outside [near, far] are clamped into the end bins.
    out = torch.cat([torch.full([1, 1, 16, 8], 0.1), torch.full([1, 1, 16, 8], 9.0)], dim=-1)
    assert float(non_flatness.non_flatness_scores(out, near_far)[0]) == pytest.approx(2.0, rel=1e-6)

def test_nfs_matches_direct_entropy():
    rng = np.random.RandomState(8)
    depth = rng.uniform(0.7, 1.3, size=[3, 1, 20, 20])
    got = non_flatness.non_flatness_scores(torch.from_numpy(depth), (0.75, 1.25), num_bins=64)
    for i in range(3):
        counts, _ = np.histogram(np.clip(depth[i].ravel(), 0.75, 1.25), bins=64, range=(0.75, 1.25))
        p = counts / counts.sum()
        assert float(got[i]) == pytest.approx(math.exp(-np.sum(p * np.log(p + 1e-12))), rel=1e-5)

#----------------------------------------------------------------------------

def _random_params(n, seed, yaw_mean=0.0):
    rng = np.random.RandomState(seed)
    return dict(yaw=rng.normal(yaw_mean, 0.5, n), pitch=rng.normal(1.4, 0.15, n), radius=rng.uniform(0.9, 1.1, n),
                fov=rng.normal(30, 3, n), lookat=np.abs(rng.normal(0, 0.02, n)))

def test_camera_w1_zero_for_identical_and_positive_otherwise():
    a = _random_params(500, 0)
    same = camera_recovery.camera_w1_distances(a, {k: v[::-1].copy() for k, v in a.items()}) # same samples, permuted
    assert all(v == pytest.approx(0, abs=1e-12) for v in same.values())
    b = _random_params(500, 1, yaw_mean=0.3)
    diff = camera_recovery.camera_w1_distances(a, b)
    assert diff['camera_w1_yaw'] == pytest.approx(scipy.stats.wasserstein_distance(a['yaw'], b['yaw']))
    assert diff['camera_w1_yaw'] > 0.2 # ~ the 0.3 mean shift
    expected = np.mean([diff['camera_w1_yaw'], diff['camera_w1_pitch'], math.radians(diff['camera_w1_fov'])])
    assert diff['camera_w1'] == pytest.approx(expected) and diff['camera_w1'] > 0

def test_camera_params_from_c25_roundtrip():
    import gen_utils
    from eg3d_ext.datasets import synthetic # the synthetic set's own c25 writer (independent code)
    p = _random_params(20, 2)
    look_at = np.zeros([20, 3])
    c = synthetic.camera_labels(p['yaw'], p['pitch'], p['radius'], p['fov'], look_at)
    got = gen_utils.camera_to_params(c)
    for k in ('yaw', 'pitch', 'radius', 'fov'):
        np.testing.assert_allclose(got[k], p[k], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(got['lookat'], 0, atol=1e-8)

#----------------------------------------------------------------------------

def test_depth_err_zero_after_scale_shift():
    gen = torch.Generator().manual_seed(0)
    true = 0.8 + 0.4 * torch.rand([3, 1, 12, 12], generator=gen)
    pred = torch.stack([2.5 * true[0] - 1.0, -0.3 * true[1] + 4.0, 7.0 * true[2]]) # any affine map of the truth
    assert depth_error.aligned_depth_error(pred, true).max().item() < 1e-6
    mask = torch.rand([3, 1, 12, 12], generator=gen) > 0.3
    noisy = pred.clone()
    noisy[~mask] = 100.0 # garbage outside the mask must not matter
    assert depth_error.aligned_depth_error(noisy, true, mask).max().item() < 1e-6

def test_depth_err_matches_lstsq_for_non_affine_depth():
    gen = torch.Generator().manual_seed(1)
    true = 0.8 + 0.4 * torch.rand([2, 1, 10, 10], generator=gen)
    pred = true ** 3 + 0.05 * torch.randn([2, 1, 10, 10], generator=gen)
    got = depth_error.aligned_depth_error(pred, true)
    for i in range(2):
        p, g = pred[i].double().flatten().numpy(), true[i].double().flatten().numpy()
        A = np.stack([p, np.ones_like(p)], axis=1)
        coef = np.linalg.lstsq(A, g, rcond=None)[0]
        rmse = np.sqrt(np.mean((A @ coef - g) ** 2))
        assert float(got[i]) == pytest.approx(rmse, rel=1e-5)
        assert rmse > 1e-3

#----------------------------------------------------------------------------
