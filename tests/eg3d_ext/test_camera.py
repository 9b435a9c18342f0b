"""Tests for eg3d_ext.camera: priors, ball-in-sphere geometry and the EG3D c25 conversion."""

import math

import numpy as np
import pytest
import torch

from eg3d_ext import camera

def test_uniform_prior_ranges_and_constants():
    prior = camera.CameraPrior('uniform')
    p = prior.sample(20000, generator=torch.Generator().manual_seed(0))
    I = camera.IDX
    assert p[:, I['yaw']].min() >= -1.57 and p[:, I['yaw']].max() <= 1.57
    assert p[:, I['pitch']].min() >= math.pi / 4 and p[:, I['pitch']].max() <= 3 * math.pi / 4
    assert torch.all(p[:, I['roll']] == 0) and torch.all(p[:, I['radius']] == 1)
    assert 10 <= p[:, I['fov']].min() and p[:, I['fov']].max() <= 45
    assert p[:, I['la_radius']].max() <= 0.2
    # Look-at direction uniform on the sphere: cos(la_pitch) ~ U[-1, 1] -> mean 0, var 1/3.
    cosp = torch.cos(p[:, I['la_pitch']])
    assert abs(cosp.mean()) < 0.02 and abs(cosp.var() - 1 / 3) < 0.02
    assert torch.allclose(prior.mean_angles(), torch.tensor([0, math.pi / 2, 0]), atol=1e-6)

def test_c25_frontal_camera_matches_eg3d_convention():
    # yaw 0, pitch pi/2 on +z looking at the origin -> OpenCV rotation diag(1, -1, -1), translation (0, 0, r).
    p = torch.tensor([[0.0, math.pi / 2, 0, 30.0, 1.5, 0, 0, 0]])
    c = camera.params_to_c25(p)
    c2w = c[0, :16].reshape(4, 4)
    assert torch.allclose(c2w[:3, :3], torch.diag(torch.tensor([1.0, -1, -1])), atol=1e-6)
    assert torch.allclose(c2w[:3, 3], torch.tensor([0, 0, 1.5]), atol=1e-6)
    K = c[0, 16:].reshape(3, 3)
    assert abs(K[0, 0] - 1 / (2 * math.tan(math.radians(15)))) < 1e-6 and K[0, 2] == 0.5 and K[1, 2] == 0.5

def test_c25_rotation_orthonormal_and_looks_at_target():
    prior = camera.CameraPrior('uniform')
    p = prior.sample(64, generator=torch.Generator().manual_seed(1)).double()
    c2w = camera.params_to_cam2world_opencv(p)
    R = c2w[:, :3, :3]
    assert torch.allclose(R.transpose(1, 2) @ R, torch.eye(3, dtype=R.dtype).expand(64, 3, 3), atol=1e-9)
    assert torch.allclose(torch.det(R), torch.ones(64, dtype=R.dtype), atol=1e-9)
    target = camera.spherical_to_cartesian(p[:, 5], p[:, 6], p[:, 7])
    fwd = torch.nn.functional.normalize(target - c2w[:, :3, 3], dim=-1)
    assert torch.allclose(R[:, :, 2], fwd, atol=1e-9)          # camera +z = viewing direction
    assert torch.all(R[:, 1, 0].abs() < 1e-9)                    # camera x stays horizontal (no roll)
    back = camera.c25_to_params(camera.params_to_c25(p), target)
    for k in ('yaw', 'pitch', 'radius', 'fov', 'la_radius'):
        assert torch.allclose(back[:, camera.IDX[k]], p[:, camera.IDX[k]], atol=1e-6), k

def test_custom_prior_uses_table_and_errors(tmp_path):
    table = np.array([[0.3, 1.2], [-0.4, 1.9]], np.float32)
    np.save(tmp_path / 'angles.npy', table)
    prior = camera.CameraPrior('custom', custom_angles=camera.load_custom_angles(str(tmp_path / 'angles.npy')))
    p = prior.sample(100, generator=torch.Generator().manual_seed(0))
    rows = {tuple(np.round(r, 5)) for r in p[:, :2].numpy()}
    assert rows == {tuple(np.round(r, 5)) for r in table}
    with pytest.raises(ValueError, match='custom'):
        camera.CameraPrior('custom')
    with pytest.raises(ValueError, match='Unknown camera prior'):
        camera.CameraPrior('nope')

def test_custom_angles_from_dataset_json(tmp_path):
    """Synthetic zips keep {"c", "yaw", "pitch", ...} rows under "cameras"; EG3D zips keep 25-float "labels"."""
    import json, zipfile
    from eg3d_ext.datasets import synthetic
    path = str(tmp_path / 'syn.zip')
    synthetic.build_synthetic(path, num_images=6, resolution=32, workers=1, progress=False, label_type='camera')
    meta = json.loads(zipfile.ZipFile(path).read('dataset.json'))
    truth = np.array([[cam['yaw'], cam['pitch']] for _, cam in meta['cameras']], np.float32)
    np.testing.assert_allclose(camera.load_custom_angles(path), truth, atol=1e-5)
    eg3d_dir = tmp_path / 'eg3d'
    eg3d_dir.mkdir()
    (eg3d_dir / 'dataset.json').write_text(json.dumps(dict(labels=meta['labels']))) # EG3D layout: c25 per image
    np.testing.assert_allclose(camera.load_custom_angles(str(eg3d_dir)), truth, atol=1e-5)
    (eg3d_dir / 'dataset.json').write_text(json.dumps(dict(labels=[[n, 3] for n, _ in meta['labels']]))) # class labels
    with pytest.raises(IOError, match='camera'):
        camera.load_custom_angles(str(eg3d_dir))
    (eg3d_dir / 'dataset.json').write_text(json.dumps(dict(cameras=[['a.png', dict(radius=1.0)]])))
    with pytest.raises(ValueError, match='neither "c" nor "yaw"'):
        camera.load_custom_angles(str(eg3d_dir))
