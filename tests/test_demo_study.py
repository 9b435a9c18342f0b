"""Smoke test of bench/study.py: EG3D-wide (with the any-resolution 2X super-resolution) and 3DGP at a minimal budget;
both runs get finite metrics in study.json and study.md, and a second call reuses them."""

import glob
import json
import os

import numpy as np
import pytest

from tests.test_demo import run_script

def _study(out, data):
    return run_script(os.path.join('bench', 'study.py'), [f'--outdir={out}', f'--data-dir={data}', '--kimg=0.008',
                      '--runs=eg3d-wide,3dgp', '--num-images=32', '--metric-scale=0.02'], out.parent, timeout=900)

@pytest.mark.slow
def test_study_eg3d_wide_and_3dgp_tiny(tmp_path):
    out, data = tmp_path / 'study', tmp_path / 'data'
    _study(out, data)
    study = json.load(open(out / 'study.json'))
    assert [r['run'] for r in study['results']] == ['eg3d-wide', '3dgp']
    for r in study['results']:
        for key in ['camera_w1', 'nfs', 'depth_err', 'fid_demo']:
            assert np.isfinite(r[key]), (r['run'], key)
    table = (out / 'study.md').read_text()
    assert '`eg3d-wide`' in table and '`3dgp`' in table

    # EG3D-wide renders at half the image resolution and super-resolves with the 2X module, not a test stand-in.
    opts = json.load(open(glob.glob(str(out / 'eg3d-wide' / '*' / 'training_options.json'))[0]))
    rk = opts['G_kwargs']['rendering_kwargs']
    assert rk['superresolution_module'] == 'training.superresolution.SuperresolutionHybrid2XAnyRes'
    assert rk['image_resolution'] == 32 and opts['loss_kwargs']['neural_rendering_resolution_initial'] == 16

    log = _study(out, data)
    assert log.count('Reusing') >= 3, log # the data set and both trained runs
