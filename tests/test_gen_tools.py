"""gen_samples / gen_videos / shapes / calc_metrics on tiny random EG3D and 3DGP pickles: the files open back."""

import json
import os

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import calc_metrics
import gen_samples
import gen_utils
import gen_videos
import shape_utils
from tests._tiny_generators import tiny_3dgp_G, tiny_eg3d_G, write_pickle

#----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def eg3d_pkl(tmp_path_factory):
    return write_pickle(tiny_eg3d_G(), tmp_path_factory.mktemp('eg3d') / 'eg3d-tiny.pkl')

@pytest.fixture(scope='module')
def gp_pkl(tmp_path_factory):
    return write_pickle(tiny_3dgp_G(), tmp_path_factory.mktemp('3dgp') / '3dgp-tiny.pkl')

def run(cli, args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output

#----------------------------------------------------------------------------

def test_gen_samples_eg3d_images_depth_and_shapes(eg3d_pkl, tmp_path):
    out = tmp_path / 'out'
    run(gen_samples.generate_images, ['--network', eg3d_pkl, '--seeds', '0-1', '--outdir', out, '--trunc', 0.7,
                                      '--shapes', 'true', '--shape-res', 24, '--shape-level', 'auto', '--device', 'cpu'])
    for seed in (0, 1):
        img = PIL.Image.open(out / f'seed{seed:04d}.png')
        assert img.size == (128, 128) and img.mode == 'RGB'
        depth = np.asarray(PIL.Image.open(out / f'seed{seed:04d}_depth.png'))
        assert depth.shape == (16, 16) and depth.dtype in (np.uint16, np.int32) and depth.max() > 255 # 16-bit
    vol = shape_utils.read_mrc(str(out / 'seed0000.mrc'))
    assert vol.shape == (24, 24, 24) and np.isfinite(vol).all() and vol.std() > 0
    verts, faces = shape_utils.read_ply(str(out / 'seed0000.ply'))
    assert len(verts) > 0 and len(faces) > 0 and faces.max() < len(verts)
    assert np.abs(verts).max() <= 0.5 + 1e-5 # inside the box_warp cube
    import trimesh
    mesh = trimesh.load(str(out / 'seed0000.ply'), force='mesh')
    assert len(mesh.vertices) == len(verts)
    # Different seeds give different images.
    a, b = [np.asarray(PIL.Image.open(out / f'seed{s:04d}.png')) for s in (0, 1)]
    assert np.abs(a.astype(int) - b).mean() > 0

def test_gen_videos_eg3d_frame_count_grid_and_depth(eg3d_pkl, tmp_path):
    import imageio
    run(gen_videos.generate_videos, ['--network', eg3d_pkl, '--seeds', '0-1', '--grid', '2x1', '--frames', 5,
                                     '--depth', 'true', '--outdir', tmp_path, '--device', 'cpu'])
    for name in ('orbit-seed0000-0001.mp4', 'orbit-seed0000-0001_depth.mp4'):
        reader = imageio.get_reader(str(tmp_path / name), 'ffmpeg')
        frames = [f for f in reader]
        reader.close()
        assert len(frames) == 5
        assert frames[0].shape == (128, 256, 3) # 2x1 grid of 128^2 cells
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp.mp4')]

def test_gen_tools_3dgp_learned_camera_class_and_sweep(gp_pkl, tmp_path):
    import imageio
    run(gen_samples.generate_images, ['--network', gp_pkl, '--seeds', '3', '--class', 1, '--camera', 'learned',
                                      '--outdir', tmp_path, '--shapes', 'true', '--shape-res', 16, '--shape-level', 'auto'])
    assert PIL.Image.open(tmp_path / "seed0003.png").size == (32, 32)
    assert len(shape_utils.read_ply(str(tmp_path / 'seed0003.ply'))[0]) > 0
    run(gen_videos.generate_videos, ['--network', gp_pkl, '--seeds', 0, '--trajectory', 'yaw-sweep', '--frames', 3,
                                     '--outdir', tmp_path])
    reader = imageio.get_reader(str(tmp_path / 'yaw-sweep-seed0000-0000.mp4'), 'ffmpeg')
    assert reader.count_frames() == 3
    reader.close()

def test_gen_samples_bad_input_is_a_clear_error(eg3d_pkl, tmp_path):
    result = CliRunner().invoke(gen_samples.generate_images, ['--network', eg3d_pkl, '--seeds', '0', '--outdir',
                                                             str(tmp_path), '--camera', 'learned'])
    assert result.exit_code != 0 and 'learns its cameras' in result.output
    result = CliRunner().invoke(gen_samples.generate_images, ['--network', str(tmp_path / 'missing.pkl'), '--seeds',
                                                             '0', '--outdir', str(tmp_path)])
    assert result.exit_code != 0 and 'missing.pkl' in result.output

def test_export_shape_volume_mesh_and_no_surface(eg3d_pkl, tmp_path):
    G = tiny_eg3d_G()
    z = torch.from_numpy(np.random.RandomState(0).randn(1, G.z_dim)).to(torch.float32)
    with torch.no_grad():
        ws = gen_utils.mapping(G, z, gen_utils.conditioning(G, 1))
        shape_utils.export_shape(G, ws, 16, None, str(tmp_path / 'auto'))
        vol = shape_utils.read_mrc(str(tmp_path / 'auto.mrc'))
        assert vol.shape == (16, 16, 16) and (vol[0] == -1000).all() and (vol[:, :, -1] == -1000).all() # cleared border
        verts, faces = shape_utils.read_ply(str(tmp_path / 'auto.ply'))
        assert len(faces) > 0 and np.abs(verts).max() <= 0.5 + 1e-5
        with pytest.raises(ValueError, match='outside the volume range'):
            shape_utils.export_shape(G, ws, 16, 1e9, str(tmp_path / 'high'))
    assert os.path.isfile(tmp_path / 'high.mrc') and not os.path.exists(tmp_path / 'high.ply') # the volume stays
    out = run(gen_samples.generate_images, ['--network', eg3d_pkl, '--seeds', '0', '--outdir', tmp_path / 'cli', '--shapes',
                                            'true', '--shape-res', 12, '--shape-level', 1e9, '--device', 'cpu'])
    assert 'no mesh for seed0000' in out and '--shape-level=auto' in out
    assert os.path.isfile(tmp_path / 'cli' / 'seed0000.mrc') # the volume is still written

#----------------------------------------------------------------------------

def test_camera_helpers_match_eg3d_conventions(eg3d_pkl):
    G = tiny_eg3d_G()
    cam = gen_utils.frontal_camera(G)
    c2w = cam[0, :16].reshape(4, 4)
    # Frontal EG3D camera: on +z at the orbit radius, rotation ~diag(1,-1,-1) (spec d.4), looking at the pivot.
    assert torch.allclose(c2w[:3, 3], torch.tensor([0, 0, 2.7]), atol=1e-5)
    assert torch.allclose(c2w[:3, :3].diag().abs(), torch.ones(3), atol=0.01)
    assert cam[0, 16].item() == pytest.approx(4.2634, abs=1e-3) # EG3D's FOV_to_intrinsics(18.837)
    p = gen_utils.camera_to_params(gen_utils.lookat_cameras(G, [0.3], [0.0]))
    assert p['yaw'][0] == pytest.approx(-0.3, abs=1e-5) and p['radius'][0] == pytest.approx(2.7)

def test_shape_utils_sphere_roundtrip(tmp_path):
    n = 20
    ax = np.linspace(-1, 1, n)
    x, y, z = np.meshgrid(ax, ax, ax, indexing='ij')
    vol = (0.6 - np.sqrt(x ** 2 + y ** 2 + z ** 2)).astype(np.float32) # > 0 inside a sphere of radius 0.6
    shape_utils.write_mrc(str(tmp_path / 'v.mrc'), vol, voxel_size=2 / (n - 1))
    back = np.transpose(shape_utils.read_mrc(str(tmp_path / 'v.mrc')), (2, 1, 0))
    np.testing.assert_array_equal(back, vol)
    shape_utils.convert_sdf_samples_to_ply(vol, [-1, -1, -1], 2 / (n - 1), str(tmp_path / 'v.ply'), level=0.0)
    verts, _faces = shape_utils.read_ply(str(tmp_path / 'v.ply'))
    np.testing.assert_allclose(np.linalg.norm(verts, axis=1), 0.6, atol=0.02)
    with pytest.raises(ValueError, match='outside the volume range'):
        shape_utils.extract_mesh(vol, 5.0)

#----------------------------------------------------------------------------

def test_calc_metrics_cli_writes_jsonl(tmp_path, monkeypatch):
    """nfs256 and camera_w1 for a 3DGP pickle in a run dir (training_options.json): lines appended as EG3D does."""
    from eg3d_ext.datasets import synthetic
    from dnnlib import registry
    registry.load_plugins(['eg3d_ext.plugin']) # as the installed entry point does: registers the 'rgbd' loader
    data = str(tmp_path / 'synthetic.zip')
    synthetic.build_synthetic(data, num_images=16, resolution=32, num_classes=3, workers=1, progress=False)
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    (run_dir / 'training_options.json').write_text('{}')
    pkl = write_pickle(tiny_3dgp_G(), run_dir / 'network-snapshot-000000.pkl')
    from metrics import metric_main, non_flatness, camera_recovery
    monkeypatch.setitem(metric_main._metric_dict, 'nfs256', lambda opts: dict(nfs256=non_flatness.compute_nfs(opts, num_gen=4)))
    monkeypatch.setitem(metric_main._metric_dict, 'camera_w1', lambda opts: camera_recovery.compute_camera_w1(opts, num_gen=64))
    run(calc_metrics.calc_metrics, ['--network', pkl, '--metrics', 'nfs256,camera_w1', '--data', data,
                                    '--mirror', 0, '--device', 'cpu', '--verbose', 'false'])
    nfs = [json.loads(l) for l in (run_dir / 'metric-nfs256.jsonl').read_text().splitlines()]
    assert len(nfs) == 1 and 1.0 <= nfs[0]['results']['nfs256'] <= 64.0
    assert nfs[0]['snapshot_pkl'] == 'network-snapshot-000000.pkl'
    cam = json.loads((run_dir / 'metric-camera_w1.jsonl').read_text())
    assert cam['results']['camera_w1'] > 0 and 'camera_w1_fov' in cam['results']

#----------------------------------------------------------------------------
