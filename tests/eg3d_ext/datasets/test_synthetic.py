"""Synthetic RGB-D set: analytic depth, camera labels, the documented camera distribution, determinism, zip contents."""

import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import PIL.Image
import pytest
import scipy.stats

from eg3d_ext.datasets import synthetic as syn

def one_scene(cls=0, yaw=0.3, pitch=1.3, radius=1.0, fov=30.0, look_at=(0.0, 0.0, 0.0), scale=0.2, rot=0.0):
    s = dict(cls=np.array([cls]), yaw=np.array([yaw]), pitch=np.array([pitch]), radius=np.array([radius]), fov=np.array([fov]),
             look_at=np.array([look_at], dtype=np.float64), obj_scale=np.array([scale]), obj_rot=np.array([rot]),
             colors=np.full([1, 2, 3], 0.5), tex_freq=np.array([3.0]), bg=np.zeros([1, 2, 3]), light=np.array([[0.0, 1.0, 0.0]]))
    s['c'] = syn.camera_labels(s['yaw'], s['pitch'], s['radius'], s['fov'], s['look_at'])
    return s

def test_sphere_depth_matches_analytic():
    res, radius, r = 48, 1.0, 0.2
    s = one_scene(yaw=0.3, pitch=1.3, radius=radius, fov=30.0, scale=r)
    _rgb, depth = syn.render(s, [0], res)
    # Independent rays: camera origin from the documented spherical formula, pinhole through pixel centres.
    o = radius * np.array([np.sin(1.3) * np.sin(-0.3), np.cos(1.3), np.sin(1.3) * np.cos(0.3)])
    fwd = -o / np.linalg.norm(o)
    right = np.cross(fwd, [0, 1, 0]); right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    f = 0.5 / np.tan(np.radians(15.0)) # normalised focal length
    j, i = np.meshgrid(np.arange(res), np.arange(res))
    x, y = ((j + 0.5) / res - 0.5) / f, ((i + 0.5) / res - 0.5) / f
    d = x[..., None] * right + y[..., None] * down + fwd
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    b = d @ o
    disc = b * b - (o @ o - r * r)
    t_ref = np.where(disc >= 0, -b - np.sqrt(np.maximum(disc, 0)), np.inf)
    np.testing.assert_array_equal(np.isfinite(depth[0]), np.isfinite(t_ref))
    hit = np.isfinite(t_ref)
    assert hit.sum() > 200
    np.testing.assert_allclose(depth[0][hit], t_ref[hit], atol=1e-9)
    # Near the image centre the ray hits the sphere at distance radius - r.
    assert abs(depth[0][res // 2, res // 2] - (radius - r)) < 2e-3

def test_camera_labels_conventions():
    c = syn.camera_labels([0.0], [np.pi / 2], [2.7], [18.837], [[0, 0, 0]])[0]
    np.testing.assert_allclose(c[:16].reshape(4, 4), [[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 2.7], [0, 0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(c[16], 1 / (2 * np.tan(np.radians(18.837) / 2)))
    np.testing.assert_allclose(c[[18, 21, 24]], [0.5, 0.5, 1])
    c = syn.camera_labels([0.7], [1.0], [1.1], [30], [[0.05, -0.02, 0.01]])[0].reshape(-1)[:16].reshape(4, 4)
    fwd = np.array([0.05, -0.02, 0.01]) - c[:3, 3]
    np.testing.assert_allclose(c[:3, 2], fwd / np.linalg.norm(fwd))
    np.testing.assert_allclose(c[:3, :3].T @ c[:3, :3], np.eye(3), atol=1e-12)

def test_camera_distribution_ks():
    s = syn.sample_scenes(3000, seed=123)
    for name in ('yaw', 'pitch', 'radius', 'fov'):
        assert scipy.stats.kstest(s[name], syn.scipy_dist(name).cdf).pvalue > 1e-3, name
    for k in range(3):
        assert scipy.stats.kstest(s['look_at'][:, k], syn.scipy_dist('look_at').cdf).pvalue > 1e-3
    # It is deliberately not the 3DGP uniform prior (yaw ~ U[-1.57, 1.57], fov ~ U[10, 45]).
    assert scipy.stats.kstest(s['yaw'], scipy.stats.uniform(-1.57, 3.14).cdf).pvalue < 1e-6
    assert scipy.stats.kstest(s['fov'], scipy.stats.uniform(10, 35).cdf).pvalue < 1e-6
    assert set(np.unique(s['cls'])) == set(range(6))

def test_classes_have_distinct_silhouettes():
    masks = [np.isfinite(syn.render(one_scene(cls=k, rot=0.4), [0], 32)[1][0]) for k in range(len(syn.CLASS_NAMES))]
    for a in range(len(masks)):
        assert masks[a].sum() > 30
        for b in range(a):
            assert (masks[a] != masks[b]).mean() > 0.02, (syn.CLASS_NAMES[a], syn.CLASS_NAMES[b])

def test_zip_contents_and_determinism(tmp_path):
    a, b, c = (str(tmp_path / n) for n in ('a.zip', 'b.zip', 'c.zip'))
    syn.build_synthetic(a, num_images=40, resolution=32, seed=7, workers=2, progress=False)
    syn.build_synthetic(b, num_images=40, resolution=32, seed=7, workers=1, progress=False)
    syn.build_synthetic(c, num_images=40, resolution=32, seed=8, workers=1, progress=False)
    with open(a, 'rb') as fa, open(b, 'rb') as fb, open(c, 'rb') as fc:
        da, db, dc = fa.read(), fb.read(), fc.read()
    assert da == db and da != dc
    with pytest.raises(FileExistsError):
        syn.build_synthetic(a, num_images=4, resolution=32, progress=False)
    zf = zipfile.ZipFile(a)
    meta = json.loads(zf.read('dataset.json'))
    assert len(meta['labels']) == len(meta['cameras']) == 40 and meta['depth']['near'] == syn.DEPTH_NEAR
    scenes = syn.sample_scenes(40, seed=7)
    name, cam = meta['cameras'][5]
    assert name == '00000/img00000005.png' and meta['labels'][5][1] == int(scenes['cls'][5])
    np.testing.assert_allclose(cam['c'], scenes['c'][5])
    _rgb, t = syn.render(scenes, [5], 32)
    v = np.array(PIL.Image.open(io.BytesIO(zf.read('00000/img00000005_depth.png')))).astype(np.float64)
    t_back = syn.DEPTH_NEAR + v / 65535 * (syn.DEPTH_FAR - syn.DEPTH_NEAR)
    np.testing.assert_allclose(t_back, np.where(np.isfinite(t[0]), t[0], syn.DEPTH_FAR), atol=1e-5)

def test_module_cli(tmp_path):
    dest = str(tmp_path / 's.zip')
    r = subprocess.run([sys.executable, '-m', 'eg3d_ext.datasets.synthetic', '--outdir', dest, '--num-images', '8',
                        '--resolution', '32', '--workers', '1', '--label-type', 'camera'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    meta = json.loads(zipfile.ZipFile(dest).read('dataset.json'))
    assert len(meta['labels'][0][1]) == 25
    r = subprocess.run([sys.executable, '-m', 'eg3d_ext.datasets.synthetic', '--outdir', dest, '--resolution', '48'], capture_output=True, text=True)
    assert r.returncode != 0 and 'power of two' in r.stderr and 'Traceback' not in r.stderr
