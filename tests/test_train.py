"""End-to-end tests of train.py: option errors, dry run, --resume pickle warnings, a torchrun rank that gives up, a
tiny CPU run with snapshot + resume (and the snapshot reloaded in a fresh process), two gloo ranks + exact resume."""

import glob
import inspect
import json
import os
import pickle
import socket
import subprocess
import sys

import click
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
    """stdout then stderr of a successful train.py run, with its pickle warnings on."""
    env = {k: v for k, v in os.environ.items() if k != 'EG3D_TRUST_PICKLES'}
    env.update(OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py')] + args, cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f'train.py failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}'
    return r.stdout + r.stderr

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
    (['--gpus=1', '--batch=4', '--data=/nonexistent/x.zip'], "Path must point to a directory or zip: '/nonexistent/x.zip'\n"),
    (['--gpus=1', '--batch=4', '--detector-dir=/nonexistent'], "'/nonexistent' is not a folder"),
    (['--gpus=1', '--batch=4', '--amp=fp16'], "'fp16' is not one of"),
])
def test_bad_options_give_one_line_errors(tiny_zip, tmp_path, args, message):
    argv = ['--outdir', str(tmp_path), '--data', tiny_zip, '-n'] + TINY + args  # later options win
    res = CliRunner().invoke(cli(), argv)
    assert res.exit_code != 0 and message in res.output, res.output
    assert 'Traceback' not in res.output

def test_error_messages_lose_only_quotes_that_wrap_them():
    import train
    assert train._message(KeyError('no such preset')) == 'no such preset'
    assert train._message(IOError("bad path: '/x.zip'")) == "bad path: '/x.zip'"
    assert train._message(ValueError("'a' is not 'b'")) == "'a' is not 'b'"

def test_neural_rendering_resolution_options_take_both_spellings(tiny_zip, tmp_path):
    base = ['--outdir', str(tmp_path), '--data', tiny_zip, '--gpus=1', '--batch=4', '-n'] + TINY
    expected = dict(neural_rendering_resolution_initial=16, neural_rendering_resolution_final=32,
                    neural_rendering_resolution_fade_kimg=5)
    for sep in '_-':
        res = CliRunner().invoke(cli(), base + [f'--{k.replace("_", sep)}={v}' for k, v in expected.items()])
        assert res.exit_code == 0, res.output
        c = json.loads(res.output[res.output.index('{'):res.output.index('\nOutput directory')])
        assert {k: c['loss_kwargs'][k] for k in expected} == expected
    cmd = cli()
    text = cmd.get_help(click.Context(cmd, info_name='train.py', terminal_width=80))
    rows = text[text.index('  --neural_rendering_resolution_initial'):text.index('  --blur_fade_kimg')].splitlines()
    assert [r.split()[0] for r in rows if r.startswith('  --')] == ['--' + k for k in expected]  # one name per option
    assert ' '.join(rows).count('[also spelled with hyphens]') == 3 and max(len(r) for r in rows) <= 80

PICKLE_WARNING = 'loading a pickle runs code stored in it'

def test_resume_pickle_warns(tiny_zip, tmp_path, monkeypatch):
    # train.py runs in a subprocess: the warning goes to stderr, which CliRunner does not flush.
    import dnnlib
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.setenv('DNNLIB_OFFLINE', '1')  # the URL must come from the download cache
    nets = dict(G=torch.nn.Linear(1, 1), D=torch.nn.Linear(1, 1), G_ema=torch.nn.Linear(1, 1))
    url = 'https://example.com/networks/downloaded.pkl'
    local = str(tmp_path / 'local.pkl')
    for path in (dnnlib.util.url_cache_path(url), local):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as f:
            pickle.dump(nets, f)
    base = ['--outdir', str(tmp_path / 'runs'), '--data', tiny_zip, '--gpus=1', '--batch=4', '-n'] + TINY
    for resume in (url, local):  # downloaded or local: both run code, as in gen_videos.py and calc_metrics.py
        out = run_train(base + ['--resume', resume])
        assert out.count(PICKLE_WARNING) == 1 and f'"resume_pkl": "{resume}"' in out, (resume, out)

def test_torchrun_rank_that_gives_up_exits_with_one_line(tiny_zip, tmp_path, monkeypatch):
    from torch_utils import distributed
    from training import training_loop
    from training.divergence import TrainingDiverged
    def give_up(**kwargs):
        assert torch.distributed.get_backend() == 'gloo' and kwargs['rank'] == 0
        raise TrainingDiverged('divergence guard gave up after 3 rollbacks at kimg 0.0')
    monkeypatch.setattr(training_loop, 'training_loop', give_up)
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    for k, v in dict(RANK=0, WORLD_SIZE=1, LOCAL_RANK=0, MASTER_ADDR='127.0.0.1', MASTER_PORT=port, EG3D_MALLOC_TUNE=0).items():
        monkeypatch.setenv(k, str(v))
    try:
        res = CliRunner().invoke(cli(), ['--outdir', str(tmp_path / 'runs'), '--data', tiny_zip, '--gpus=1', '--batch=4'] + TINY)
    finally:
        distributed.cleanup()
    assert isinstance(res.exception, SystemExit) and res.exit_code == 1, res.output
    assert res.output.rstrip().splitlines()[-1] == 'Error: divergence guard gave up after 3 rollbacks at kimg 0.0'
    assert 'Traceback' not in res.output
    assert os.path.isfile(tmp_path / 'runs' / '00000-ffhq-tiny32-gpus1-batch4-gamma1' / 'training_options.json')

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

@pytest.fixture(scope='module')
def tiny_run(tiny_zip, tmp_path_factory):
    """One tiny single-process run of two ticks: (outdir, run dir, train.py output)."""
    out = str(tmp_path_factory.mktemp('runs'))
    log = run_train(['--outdir', out, '--data', tiny_zip, '--gpus=1', '--batch=2', '--mbstd-group=2',
                     '--kimg=0.004', '--tick=0.002'] + TINY)
    return out, os.path.join(out, '00000-ffhq-tiny32-gpus1-batch2-gamma1'), log

@pytest.mark.slow
def test_train_snapshot_and_exact_resume(tiny_zip, tiny_run):
    import legacy
    out, run_dir, log = tiny_run
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
    log = run_train(['--outdir', out, '--data', tiny_zip, '--gpus=1', '--batch=2', '--mbstd-group=2', '--kimg=0.002',
                     '--glr=0', '--dlr=0', '--resume', pkl] + TINY)
    assert log.count(PICKLE_WARNING) == 1  # train.py's check warns; the training loop loads the same file silently
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

def _render(G, z, c):
    """G_ema's outputs for fixed inputs. The fresh-process test runs this same source in the other process."""
    torch.manual_seed(0)  # the renderer jitters its ray samples
    with torch.no_grad():
        out = G(z, c, noise_mode='const')
    return {k: out[k] for k in ('image', 'image_raw', 'image_depth')}

# argv: repo root, torch threads, snapshot, inputs file, outputs file. Nothing from the tests is importable there.
FRESH_PROCESS = """
import sys
import torch
sys.path.insert(0, sys.argv[1])
import legacy
torch.set_num_threads(int(sys.argv[2]))
with open(sys.argv[3], 'rb') as f:
    G = legacy.load_network_pkl(f)['G_ema']
z, c = torch.load(sys.argv[4])
torch.save(_render(G, z, c), sys.argv[5])
"""

@pytest.mark.slow
def test_snapshot_reproduces_g_ema_in_a_fresh_process(tiny_run, tmp_path):
    import legacy
    pkl = os.path.join(tiny_run[1], 'network-snapshot-000000.pkl')
    with open(pkl, 'rb') as f:
        G = legacy.load_network_pkl(f)['G_ema']
    z = torch.randn([2, G.z_dim], generator=torch.Generator().manual_seed(1))
    c = torch.tensor([FRONTAL, FRONTAL], dtype=torch.float32)
    torch.save((z, c), tmp_path / 'inputs.pt')
    p = subprocess.run([sys.executable, '-c', inspect.getsource(_render) + FRESH_PROCESS, ROOT, str(torch.get_num_threads()),
                        pkl, str(tmp_path / 'inputs.pt'), str(tmp_path / 'outputs.pt')],
                       cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    fresh, ours = torch.load(tmp_path / 'outputs.pt'), _render(G, z, c)
    assert ours['image'].shape == (2, 3, 32, 32) and ours['image'].std() > 0
    for k in ours:
        assert torch.equal(fresh[k], ours[k]), k

@pytest.mark.slow
def test_train_two_gloo_ranks_and_exact_resume(tiny_zip, tmp_path):
    # Two CPU ranks (gloo, file:// rendezvous). The snapshot runs misc.check_ddp_consistency on G, D and G_ema,
    # which raises unless every parameter is identical on both ranks after the optimizer steps.
    import legacy
    from training import checkpoint
    out = str(tmp_path / 'runs')
    args = ['--outdir', out, '--data', tiny_zip, '--gpus=2', '--batch=2', '--mbstd-group=1', '--tick=0.002'] + TINY
    log = run_train(args + ['--kimg=0.002'])
    assert 'Distributing across 2 process(es)' in log
    run_dir = os.path.join(out, '00000-ffhq-tiny32-gpus2-batch2-gamma1')
    snapshot = os.path.join(run_dir, 'network-snapshot-000000.pkl')
    with open(snapshot, 'rb') as f:
        G_first = _params(legacy.load_network_pkl(f)['G'])
    stats = [json.loads(l) for l in open(os.path.join(run_dir, 'stats.jsonl'))]
    assert len(stats) == 1 and stats[-1]['Loss/G/loss']['num'] == 2  # one sample from each rank was collected

    # Exact resume of both ranks to a later kimg: same run dir, one more tick, logs and snapshots continue.
    log = run_train(args + ['--kimg=0.004', '--resume', run_dir])
    assert 'Resuming from' in log and 'checkpoint-000000-tick000001.pt' in log, log
    assert sorted(os.listdir(out)) == ['00000-ffhq-tiny32-gpus2-batch2-gamma1']
    stats = [json.loads(l) for l in open(os.path.join(run_dir, 'stats.jsonl'))]
    assert [s['Progress/tick']['mean'] for s in stats] == [0, 1]
    assert [s['Progress/kimg']['mean'] for s in stats] == pytest.approx([0.002, 0.004])
    assert stats[-1]['Loss/G/loss']['num'] == 2
    assert checkpoint.load(os.path.join(run_dir, 'checkpoint-000000-tick000002.pt'))['cur_nimg'] == 4
    assert open(os.path.join(run_dir, 'log.txt')).read().count('Training for') == 2
    with open(snapshot, 'rb') as f:
        G_resumed = _params(legacy.load_network_pkl(f)['G'])
    assert G_resumed.keys() == G_first.keys() and any(not torch.equal(G_first[k], G_resumed[k]) for k in G_first)

#----------------------------------------------------------------------------
