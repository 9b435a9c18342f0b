"""Tests for camera_utils: EG3D pose samplers, cam2world construction and intrinsics."""

import math

import pytest
import torch

import camera_utils
from training.volumetric_rendering.ray_sampler import RaySampler

#----------------------------------------------------------------------------

def test_frontal_lookat_camera():
    pose = camera_utils.LookAtPoseSampler.sample(math.pi / 2, math.pi / 2, torch.zeros(3), radius=2.7)
    assert pose.shape == (1, 4, 4)
    torch.testing.assert_close(pose[0, :3, :3], torch.diag(torch.tensor([1.0, -1.0, -1.0])), atol=1e-5, rtol=0)
    torch.testing.assert_close(pose[0, :3, 3], torch.tensor([0.0, 0.0, 2.7]), atol=1e-5, rtol=0)
    torch.testing.assert_close(pose[0, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]))

@pytest.mark.parametrize('yaw,pitch', [(0.3, 1.2), (math.pi / 2 - 0.4, math.pi / 2 + 0.3), (2.5, 0.4)])
def test_lookat_pose_geometry(yaw, pitch):
    lookat = torch.tensor([0.1, -0.2, 0.05])
    pose = camera_utils.LookAtPoseSampler.sample(yaw, pitch, lookat, radius=2.0)[0]
    R, t = pose[:3, :3], pose[:3, 3]
    torch.testing.assert_close(R.T @ R, torch.eye(3), atol=1e-5, rtol=0)
    assert torch.det(R) == pytest.approx(1.0, abs=1e-5)
    phi = math.acos(1 - 2 * pitch / math.pi) # EG3D maps the polar angle through arccos(1 - 2v/pi)
    expected = 2.0 * torch.tensor([math.sin(phi) * math.cos(math.pi - yaw), math.cos(phi),
        math.sin(phi) * math.sin(math.pi - yaw)])
    torch.testing.assert_close(t, expected, atol=1e-5, rtol=0)
    forward = (lookat - t) / (lookat - t).norm()
    torch.testing.assert_close(R[:, 2], forward, atol=1e-5, rtol=0) # camera +z looks at the target
    assert R[1, 1] < 0 and abs(R[1, 0]) < 1e-6 # image y points down, x stays horizontal (world y-up)

def test_gaussian_and_uniform_samplers():
    torch.manual_seed(0)
    g = camera_utils.GaussianCameraPoseSampler.sample(1.0, 1.3, radius=1.5)
    ref = camera_utils.LookAtPoseSampler.sample(1.0, 1.3, torch.zeros(3), radius=1.5)
    torch.testing.assert_close(g, ref)
    u = camera_utils.UniformCameraPoseSampler.sample(math.pi / 2, math.pi / 2, horizontal_stddev=0.5,
        vertical_stddev=0.0, radius=1.0, batch_size=256)
    yaw = math.pi - torch.atan2(u[:, 2, 3], u[:, 0, 3]) # origin = (cos(pi - h), ., sin(pi - h))
    assert yaw.min() >= math.pi / 2 - 0.5 - 1e-5 and yaw.max() <= math.pi / 2 + 0.5 + 1e-5
    assert yaw.std() > 0.2
    torch.testing.assert_close(u[:, 1, 3], torch.zeros(256), atol=1e-5, rtol=0)

def test_fov_to_intrinsics_uses_eg3d_constants():
    K = camera_utils.FOV_to_intrinsics(18.837)
    assert K[0, 0].item() == pytest.approx(4.2634, abs=1e-4) and K[0, 0] == K[1, 1]
    torch.testing.assert_close(K[:, 2], torch.tensor([0.5, 0.5, 1.0]))
    assert K[0, 1] == 0 and K[1, 0] == 0

def test_centre_ray_of_frontal_camera_points_at_origin():
    pose = camera_utils.LookAtPoseSampler.sample(math.pi / 2, math.pi / 2, torch.zeros(3), radius=2.7)
    K = camera_utils.FOV_to_intrinsics(18.837)[None]
    origins, dirs = RaySampler()(pose, K, 3)
    torch.testing.assert_close(dirs[0, 4], torch.tensor([0.0, 0.0, -1.0]), atol=1e-6, rtol=0)
    assert dirs[0, 1, 1] > 0 and dirs[0, 5, 0] > 0 # top row looks toward +y (y-up world), right column toward +x

def test_create_cam2world_matrix_batch():
    forward = torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    origin = torch.tensor([[0.0, 0.0, 3.0], [-2.0, 0.0, 0.0]])
    M = camera_utils.create_cam2world_matrix(forward, origin)
    assert M.shape == (2, 4, 4)
    torch.testing.assert_close(M[:, :3, 2], forward)
    torch.testing.assert_close(M[:, :3, 3], origin)

#----------------------------------------------------------------------------
