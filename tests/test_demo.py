"""Smoke test of demo.py: a minimal budget end to end; every output opens, and a second call reuses everything."""

import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def run_script(script: str, args: list, cwd, timeout: int = 600) -> str:
    """Run a repository script in a fresh interpreter; assert success and return its stdout."""
    res = subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=str(cwd), capture_output=True, text=True,
                         timeout=timeout, env=dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '2')))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout

def _demo(out, data):
    return run_script('demo.py', [f'--outdir={out}', f'--data-dir={data}', '--kimg=0.016', '--num-images=32', '--frames=3',
                                  '--shape-res=32', '--metric-scale=0.02'], out.parent)

@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    import imageio
    import shape_utils
    out, data = tmp_path / 'demo_out', tmp_path / 'demo_data'
    log = _demo(out, data)
    assert '[4/4]' in log and 'Done in' in log

    # Sample and depth grids: 4x4 cells of 32 px, enlarged to 512 px; the depth maps are not constant.
    for name in ['samples.png', 'depth.png']:
        with PIL.Image.open(out / name) as img:
            assert img.size == (512, 512) and img.mode == 'RGB'
    assert np.asarray(PIL.Image.open(out / 'depth.png')).std() > 0
    with PIL.Image.open(out / 'samples' / 'seed0000_depth.png') as img:
        assert img.size == (32, 32) and img.mode.startswith('I')

    # Orbit videos have the requested frames of a 2x2 grid.
    for name in ['orbit-seed0000-0003.mp4', 'orbit-seed0000-0003_depth.mp4']:
        reader = imageio.get_reader(str(out / 'video' / name))
        frames = [f for f in reader]
        reader.close()
        assert len(frames) == 3 and frames[0].shape[:2] == (64, 64)

    verts, faces = shape_utils.read_ply(str(out / 'mesh' / 'seed0000.ply'))
    assert len(verts) > 0 and len(faces) > 0 and np.isfinite(verts).all()

    metrics = json.load(open(out / 'metrics.json'))
    for key in ['camera_w1', 'nfs', 'depth_err', 'fid_demo']:
        assert np.isfinite(metrics[key]), key
    assert metrics['camera_w1'] > 0 and 1 <= metrics['nfs'] <= 64 and metrics['fid_demo'] >= 0
    assert 'NOT the Inception FID' in metrics['protocol']['note']
    readme = (out / 'README.md').read_text()
    for target in ['samples.png', 'depth.png', 'orbit-seed0000-0003.mp4', 'seed0000.ply', 'metrics.json', 'not the Inception FID']:
        assert target in readme, target
    progress = json.load(open(out / 'runs' / 'progress.json'))
    assert progress['kimg'] == pytest.approx(0.016) and os.path.isfile(progress['pkl'])

    # Re-running with the same budget trains nothing and reuses the data, exports and metrics.
    runs = sorted(os.listdir(out / 'runs'))
    log = _demo(out, data)
    assert 'Reusing' in log and log.count('Reusing') >= 4, log
    assert sorted(os.listdir(out / 'runs')) == runs
