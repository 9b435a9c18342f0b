"""End-to-end tests of train.py: option errors, dry run, a tiny CPU run with snapshot + exact resume, two gloo ranks."""

import glob
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'training'))
from test_dataset import make_zip  # noqa: E402

# Tiny ffhq config: 32 px images, 25-dim cameras, small channels, few ray samples, test-only 2X superresolution
# (EG3D has no SR module below 128 px; --sr-module is the EG3D option for overriding it).
TINY = ['--cfg=ffhq', '--gamma=1', '--cbase=256', '--cmax=8', '--map-depth=1', '--metrics=none', '--workers=1',
        '--neural_rendering_resolution_initial=16', '--depth-resolution=6', '--depth-resolution-importance=6',
        '--grid=2x2', '--sr-module=tests.tiny_sr.TinySuperresolution', '--snap=1']

FRONTAL = [1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 2.7, 0, 0, 0, 1, 4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1]

@pytest.fixture(scope='module')
def tiny_zip(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('data') / 'tiny32.zip')
    rnd = np.random.RandomState(0)
    imgs = [rnd.randint(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    labels = [[float(v) + 0.01 * i for v in FRONTAL] for i in range(4)]
    make_zip(path, imgs, labels)
    return path

def run_train(args, timeout=900):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py')] + args, cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f'train.py failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}'
    return r.stdout

def cli():
    import train
    return train.make_cli()

#----------------------------------------------------------------------------

def test_dry_run_prints_options_and_creates_nothing(tiny_zip, tmp_path):
    res = CliRunner().invoke(cli(), ['--outdir', str(tmp_path / 'runs'), '--data', tiny_zip, '--gpus=1', '--batch=4', '-n'] + TINY)
    assert res.exit_code == 0, res.output
    assert 'Dry run; exiting.' in res.output and not (tmp_path / 'runs').exists()
    assert '00000-ffhq-tiny32-gpus1-batch4-gamma1' in res.output
    c = json.loads(res.output[res.output.index('{'):res.output.index('\nOutput directory')])
    rk = c['G_kwargs']['rendering_kwargs']
    assert (rk['depth_resolution'], rk['ray_start'], rk['ray_end'], rk['avg_camera_pivot']) == (6, 2.25, 3.3, [0, 0, 0.2])
    assert c['G_opt_kwargs']['betas'] == [0.0, 0.99] and c['G_reg_interval'] == 4 and c['ema_kimg'] == 4 * 10 / 32
    assert c['loss_kwargs']['blur_fade_kimg'] == 4 * 200 / 32 and c['loss_kwargs']['gpc_reg_prob'] is None
    assert c['training_set_kwargs']['resolution'] == 32 and c['training_set_kwargs']['use_labels'] is True

@pytest.mark.parametrize('args, message', [
    (['--gpus=3', '--batch=4'], 'must be a multiple of --gpus=3'),
    (['--gpus=1', '--batch=4', '--kimg=-1'], '-1 must be > 0'),
    (['--gpus=1', '--batch=4', '--batch-gpu=3'], 'multiple of --gpus times --batch-gpu'),
    (['--gpus=1', '--batch=2'], 'must be at least --mbstd-group=4'),
    (['--gpus=1', '--batch=4', '--cfg=nope'], "'nope' is not one of"),
    (['--gpus=1', '--batch=4', '--data=/nonexistent/x.zip'], 'Path must point to a directory or zip'),
    (['--gpus=1', '--batch=4', '--detector-dir=/nonexistent'], "'/nonexistent' is not a folder"),
    (['--gpus=1', '--batch=4', '--amp=fp16'], "'fp16' is not one of"),
])
def test_bad_options_give_one_line_errors(tiny_zip, tmp_path, args, message):
    argv = ['--outdir', str(tmp_path), '--data', tiny_zip, '-n'] + TINY + args  # later options win
    res = CliRunner().invoke(cli(), argv)
    assert res.exit_code != 0 and message in res.output, res.output
    assert 'Traceback' not in res.output

def test_no_sr_for_resolution_is_clear(tmp_path):
    make_zip(str(tmp_path / 'd.zip'), [np.zeros((32, 32, 3), np.uint8)] * 4, [FRONTAL] * 4)
    argv = ['--outdir', str(tmp_path), '--data', str(tmp_path / 'd.zip'), '--cfg=ffhq', '--gpus=1', '--batch=4', '--gamma=1', '-n']
    res = CliRunner().invoke(cli(), argv)
    assert res.exit_code != 0 and 'No EG3D superresolution module for 32x32' in res.output

def test_speed_options_are_recorded_only_when_on(tiny_zip, tmp_path):
    base = ['--outdir', str(tmp_path / 'runs'), '--data', tiny_zip, '--gpus=1', '--batch=4', '-n'] + TINY
    for extra, expected in [([], {}), (['--compile', '--amp=bf16', f'--detector-dir={tmp_path}'],
                                       dict(torch_compile=True, amp='bf16', detector_dir=str(tmp_path)))]:
        res = CliRunner().invoke(cli(), base + extra)
        assert res.exit_code == 0, res.output
        c = json.loads(res.output[res.output.index('{'):res.output.index('\nOutput directory')])
        assert {k: c[k] for k in ('torch_compile', 'amp', 'detector_dir') if k in c} == expected

@pytest.fixture
def no_detectors(tmp_path, monkeypatch):
    """Empty private download cache, no downloads, no $EG3D_DETECTOR_DIR; an empty detector folder."""
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.setenv('DNNLIB_OFFLINE', '1')
    monkeypatch.delenv('EG3D_DETECTOR_DIR', raising=False)
    (tmp_path / 'detectors').mkdir()
    return tmp_path / 'detectors'

def test_missing_detector_stops_the_run_at_launch(tiny_zip, tmp_path, no_detectors):
    argv = ['--outdir', str(tmp_path / 'runs'), '--data', tiny_zip, '--gpus=1', '--batch=4'] + TINY + \
           ['--metrics=fid50k_full', f'--detector-dir={no_detectors}']
    res = CliRunner().invoke(cli(), argv)
    assert res.exit_code != 0, res.output
    assert 'Feature detector inception-2015-12-05.pkl not found' in res.output, res.output
    assert str(no_detectors / 'inception-2015-12-05.pkl') in res.output # where to put it
    assert 'Traceback' not in res.output and not (tmp_path / 'runs').exists() # nothing started

def test_detector_check_finds_local_files_and_skips_runs_without_metrics(tmp_path, no_detectors, monkeypatch):
    from metrics import metric_utils
    from training.launch import missing_detector
    with open(no_detectors / 'inception-2015-12-05.pkl', 'wb') as f:
        pickle.dump(metric_utils.TinyDetector(), f)
    assert missing_detector(['fid50k_full', 'kid50k_full', 'nfs256'], str(no_detectors)) is None
    assert 'vgg16.pkl' in missing_detector(['fid50k_full', 'pr50k3_full'], str(no_detectors))
    assert 'inception-2015-12-05.pkl' in missing_detector(['fid2k_full']) # no folder: the empty download cache
    assert missing_detector([], str(tmp_path / 'nowhere')) is None # --metrics=none checks nothing
    monkeypatch.setenv('EG3D_DETECTOR_DIR', str(no_detectors))
    assert missing_detector(['is50k']) is None

#----------------------------------------------------------------------------

def _params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}

@pytest.mark.slow
def test_train_snapshot_and_exact_resume(tiny_zip, tmp_path):
    import legacy
    out = str(tmp_path / 'runs')
    log = run_train(['--outdir', out, '--data', tiny_zip, '--gpus=1', '--batch=2', '--mbstd-group=2',
                     '--kimg=0.004', '--tick=0.002'] + TINY)
    run_dir = os.path.join(out, '00000-ffhq-tiny32-gpus1-batch2-gamma1')
    status = [l for l in log.splitlines() if l.startswith('tick ')]
    assert len(status) == 2 and all(f in status[0] for f in ('kimg', 'sec/tick', 'sec/kimg', 'maintenance', 'cpumem', 'gpumem', 'reserved', 'augment'))
    for name in ('training_options.json', 'log.txt', 'reals.png', 'fakes000000.png', 'fakes000000_raw.png',
                 'fakes000000_depth.png', 'network-snapshot-000000.pkl'):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    assert glob.glob(os.path.join(run_dir, 'events.out.tfevents.*'))
    stats = [json.loads(l) for l in open(os.path.join(run_dir, 'stats.jsonl'))]
    assert len(stats) == 2 and {'Loss/G/loss', 'Loss/D/loss', 'Loss/r1_penalty', 'Timing/Gmain', 'Progress/kimg'} <= set(stats[0])
    assert np.isfinite(stats[-1]['Loss/G/loss']['mean'])
    assert 'tick 1' in open(os.path.join(run_dir, 'log.txt')).read()

    pkl = os.path.join(run_dir, 'network-snapshot-000000.pkl')
    with open(pkl, 'rb') as f:
        snap = legacy.load_network_pkl(f)
    assert list(snap) == ['training_set_kwargs', 'G', 'D', 'G_ema', 'augment_pipe']
    assert snap['training_set_kwargs']['path'] == tiny_zip and snap['augment_pipe'] is None
    assert 'dataset_label_std' in dict(snap['G'].named_buffers())
    assert snap['G_ema'].neural_rendering_resolution == 16

    # Resume with zero learning rates: every parameter must come back exactly from the snapshot.
    run_train(['--outdir', out, '--data', tiny_zip, '--gpus=1', '--batch=2', '--mbstd-group=2', '--kimg=0.002',
               '--glr=0', '--dlr=0', '--resume', pkl] + TINY)
    run2 = os.path.join(out, '00001-ffhq-tiny32-gpus1-batch2-gamma1')
    opts = json.load(open(os.path.join(run2, 'training_options.json')))
    assert opts['resume_pkl'] == pkl and opts['ema_rampup'] is None and opts['loss_kwargs']['blur_init_sigma'] == 0
    with open(os.path.join(run2, 'network-snapshot-000000.pkl'), 'rb') as f:
        snap2 = legacy.load_network_pkl(f)
    for name in ('G', 'D'):
        a, b = _params(snap[name]), _params(snap2[name])
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f'{name}.{k} not restored'
    # G_ema: restored, then one EMA step toward the (unchanged) G without rampup: beta = 0.5 ** (batch / ema_nimg).
    beta = 0.5 ** (2 / (opts['ema_kimg'] * 1000))
    g, e_old, e_new = _params(snap['G']), _params(snap['G_ema']), _params(snap2['G_ema'])
    assert any(not torch.equal(g[k], e_old[k]) for k in g)  # the check below is not vacuous
    for k in g:
        torch.testing.assert_close(e_new[k], g[k].lerp(e_old[k], beta), rtol=0, atol=1e-7, msg=f'G_ema.{k}')

@pytest.mark.slow
def test_train_two_gloo_ranks(tiny_zip, tmp_path):
    # Two CPU ranks (gloo, file:// rendezvous). The snapshot runs misc.check_ddp_consistency on G, D and G_ema,
    # which raises unless every parameter is identical on both ranks after the optimizer steps.
    out = str(tmp_path / 'runs')
    log = run_train(['--outdir', out, '--data', tiny_zip, '--gpus=2', '--batch=2', '--mbstd-group=1', '--kimg=0.002'] + TINY)
    assert 'Distributing across 2 process(es)' in log
    run_dir = os.path.join(out, '00000-ffhq-tiny32-gpus2-batch2-gamma1')
    assert os.path.isfile(os.path.join(run_dir, 'network-snapshot-000000.pkl'))
    stats = [json.loads(l) for l in open(os.path.join(run_dir, 'stats.jsonl'))]
    assert stats[-1]['Loss/G/loss']['num'] == 2  # one sample from each rank was collected

#----------------------------------------------------------------------------
