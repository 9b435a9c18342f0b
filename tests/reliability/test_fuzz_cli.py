"""Bad-input fuzzing of the command-line tools: broken data sets, truncated/garbage network files, wrong-shaped
embeddings and bad option values each give a one-line `Error: ...` and a non-zero exit, never a traceback, and
never touch an existing run directory."""

import io
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _tiny  # noqa: E402

import legacy  # noqa: E402

@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """Good and broken inputs, built once."""
    d = tmp_path_factory.mktemp('fuzz')
    f = dict(good=_tiny.make_tiny_zip(str(d / 'tiny32.zip')), dir=str(d))
    f['corrupt_zip'] = str(d / 'corrupt.zip')
    open(f['corrupt_zip'], 'wb').write(open(f['good'], 'rb').read()[:300])
    os.makedirs(d / 'empty')
    f['empty'] = str(d / 'empty')
    f['bad_labels'] = str(d / 'bad_labels.zip')
    _tiny.make_zip(f['bad_labels'], [np.zeros((32, 32, 3), np.uint8)] * 2, [[1.0, 2.0], [1.0, 2.0, 3.0]])
    f['bad_emb'] = str(d / 'bad_emb.zip')
    buf = io.BytesIO()
    np.save(buf, np.zeros([3, 8], np.float32))  # 3 rows for 4 images
    _tiny.make_zip(f['bad_emb'], [np.zeros((32, 32, 3), np.uint8)] * 4, [_tiny.FRONTAL] * 4, extra={'embeddings.npy': buf.getvalue()})
    f['garbage_pkl'] = str(d / 'garbage.pkl')
    open(f['garbage_pkl'], 'wb').write(os.urandom(2000))
    f['truncated_pkl'] = str(d / 'truncated.pkl')
    open(f['truncated_pkl'], 'wb').write(pickle.dumps(dict(G=list(range(1000))))[:500])
    f['wrong_pkl'] = str(d / 'wrong.pkl')
    open(f['wrong_pkl'], 'wb').write(pickle.dumps(dict(G_ema=[1, 2, 3])))
    f['bad_st'] = str(d / 'bad.safetensors')
    open(f['bad_st'], 'wb').write(b'\xff' * 8 + b'{}' * 10)
    f['bad_ckpt'] = str(d / 'checkpoint-000000-tick000001.pt')
    open(f['bad_ckpt'], 'wb').write(b'PK\x03\x04' + os.urandom(100))
    return f

def assert_clean_error(res, *needles):
    out = res.output
    assert res.exit_code not in (0, None), out
    assert isinstance(res.exception, SystemExit), f'uncaught {type(res.exception).__name__}: {res.exception}\n{out}'
    assert 'Traceback' not in out and ('Error: ' in out), out
    for n in needles:
        assert n in out, out

def train_cli():
    import train
    return train.make_cli()

def train_args(files, *args):
    return ['--outdir', os.path.join(files['dir'], 'runs'), '--data', files['good']] + _tiny.TINY + ['--kimg=0.002', '-n'] + list(args)

#----------------------------------------------------------------------------

@pytest.mark.parametrize('args, needle', [
    (['--kimg=-1'], '-1 must be > 0'),
    (['--kimg=abc'], 'is not a number'),
    (['--cfg=nope'], "'nope' is not one of"),
    (['--gpus=3'], 'must be a multiple of --gpus=3'),
    (['--batch-gpu=1'], 'must be at least --mbstd-group=2'),
    (['--batch=0'], '0 is not in the range'),
    (['--gamma=-1'], 'not in the range'),
    (['--keep-ckpts=-1'], 'not in the range'),
    (['--resume=/nonexistent/run'], 'no such file or directory'),
    (['--resume=/nonexistent/x.pkl'], 'no such file'),
    (['--resume=GARBAGE_PKL'], 'not a valid network pickle'),
    (['--resume=BAD_CKPT'], 'holds no readable training_options.json'),
    (['--data=CORRUPT_ZIP'], 'corrupt.zip'),
    (['--data=EMPTY'], 'empty'),
    (['--data=BAD_LABELS'], 'label'),
])
def test_train_bad_values(files, args, needle):
    args = [a.replace('GARBAGE_PKL', files['garbage_pkl']).replace('BAD_CKPT', files['bad_ckpt'])
            .replace('CORRUPT_ZIP', files['corrupt_zip']).replace('EMPTY', files['empty']).replace('BAD_LABELS', files['bad_labels'])
            for a in args]
    res = CliRunner().invoke(train_cli(), train_args(files, *args))
    assert_clean_error(res)
    assert needle.lower() in res.output.lower(), res.output

def test_wrong_shaped_embeddings(files):
    from eg3d_ext.dataset_rgbd import RGBDDataset
    with pytest.raises((ValueError, IOError), match='embeddings'):
        ds = RGBDDataset(files['bad_emb'])
        ds[0]
    res = CliRunner().invoke(train_cli(), train_args(files, '--cfg=3dgp', '--data', files['bad_emb']))
    assert_clean_error(res)

def test_resume_with_other_options_leaves_the_run_untouched(files, tmp_path):
    run = tmp_path / 'runs' / '00000-ffhq-tiny32-gpus1-batch2-gamma1'
    c = _tiny.tiny_config(str(tmp_path / 'runs'), files['good'], '--kimg=0.002')
    os.makedirs(run)
    import json
    (run / 'training_options.json').write_text(json.dumps(dict(c, run_dir=str(run)), indent=2))
    before = {p: os.stat(run / p).st_mtime_ns for p in os.listdir(run)}
    argv = ['--outdir', str(tmp_path / 'runs'), '--data', files['good']] + _tiny.TINY + ['--kimg=0.002']
    res = CliRunner().invoke(train_cli(), argv + ['--resume', str(run), '--gamma=5'])
    assert_clean_error(res, 'loss_kwargs.r1_gamma')
    assert {p: os.stat(run / p).st_mtime_ns for p in os.listdir(run)} == before
    assert os.listdir(tmp_path / 'runs') == [run.name]
    (run / 'checkpoint-000000-tick000001.pt').write_bytes(b'PK\x03\x04' + os.urandom(100))
    res = CliRunner().invoke(train_cli(), argv + ['--resume', str(run / 'checkpoint-000000-tick000001.pt')])
    assert_clean_error(res, 'unreadable training checkpoint')
    (run / 'checkpoint-000000-tick000001.pt').unlink()
    res = CliRunner().invoke(train_cli(), argv + ['--resume=auto', '--gamma=5', '-n'])  # no match -> a new run
    assert res.exit_code == 0 and 'starting a new run' in res.output and '00001-ffhq' in res.output, res.output
    res = CliRunner().invoke(train_cli(), argv + ['--resume=auto', '-n'])                # match -> continue there
    assert res.exit_code == 0 and f'Output directory:    {run}' in res.output, res.output

#----------------------------------------------------------------------------

@pytest.mark.parametrize('which', ['garbage_pkl', 'truncated_pkl', 'wrong_pkl', 'bad_st'])
def test_network_loaders_reject_broken_files(files, tmp_path, which):
    path = files[which]
    assert_clean_error(CliRunner().invoke(legacy.main, ['convert', path, str(tmp_path / 'o.safetensors')]), path)
    assert_clean_error(CliRunner().invoke(legacy.main, ['--source', path, '--dest', str(tmp_path / 'o.pkl')]), path)
    import calc_metrics
    assert_clean_error(CliRunner().invoke(calc_metrics.calc_metrics, ['--network', path, '--metrics=none', '--device=cpu']), path)
    import gen_samples
    assert_clean_error(CliRunner().invoke(gen_samples.generate_images, ['--network', path, '--seeds=0', '--outdir', str(tmp_path / 'o'), '--device=cpu']), path)
    from viz import renderer
    with pytest.raises(IOError, match=path.replace('.', r'\.')):
        renderer.load_network_data(path)
    assert not os.path.exists(tmp_path / 'o.safetensors') and not os.path.exists(tmp_path / 'o.pkl')

def test_legacy_info_and_bad_dest(files, tmp_path):
    assert_clean_error(CliRunner().invoke(legacy.main, ['info', files['garbage_pkl']]), 'not a valid pickle')
    assert_clean_error(CliRunner().invoke(legacy.main, []), '--source and --dest are required')

@pytest.mark.parametrize('which', ['corrupt_zip', 'empty'])
def test_dataset_tool_broken_sources(files, tmp_path, which):
    import dataset_tool
    res = CliRunner().invoke(dataset_tool.main, ['convert', '--source', files[which], '--dest', str(tmp_path / 'o.zip')])
    assert_clean_error(res)
    assert not os.path.exists(tmp_path / 'o.zip')

def test_subprocess_errors_are_one_line(files, tmp_path):
    """The real entry points (not CliRunner): exit code 1/2, a single `Error:` line, no traceback on stderr."""
    for cmd in ([os.path.join(_tiny.ROOT, 'legacy.py'), 'convert', files['truncated_pkl'], str(tmp_path / 'o.safetensors')],
                [os.path.join(_tiny.ROOT, 'train.py')] + train_args(files, '--resume', files['bad_ckpt'])):
        r = subprocess.run([sys.executable] + cmd, cwd=_tiny.ROOT, env=_tiny.env(), capture_output=True, text=True, timeout=120)
        assert r.returncode in (1, 2) and 'Traceback' not in r.stderr, r.stderr
        assert [l for l in r.stderr.splitlines() if l.startswith('Error: ')], r.stderr
