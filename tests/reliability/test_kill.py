"""Kill test: SIGKILL a tiny training run during a step and during a snapshot write, resume with --resume=auto,
and check that at most one tick of work is lost and that no file under a final name is truncated or corrupt."""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import PIL.Image
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _tiny  # noqa: E402

import legacy  # noqa: E402
from training import checkpoint  # noqa: E402

ARGS = ['--kimg=0.014', '--resume=auto']  # ticks end at nimg 2, 6, 10, 14

def start(outdir, data, log, **env):
    return subprocess.Popen(_tiny.train_cmd(outdir, data, *ARGS), cwd=_tiny.ROOT, env=dict(_tiny.env(), **env),
                            stdout=open(log, 'w'), stderr=subprocess.STDOUT)

def wait_for(cond, proc, timeout=240):
    t0 = time.time()
    while not cond():
        assert proc.poll() is None, 'training exited before it could be killed'
        assert time.time() - t0 < timeout, 'timed out'
        time.sleep(0.05)

def run_dirs(outdir):
    return sorted(glob.glob(os.path.join(outdir, '0*')))

def completed_ticks(run_dir):
    path = os.path.join(run_dir, 'stats.jsonl')
    return len(open(path).read().splitlines()) if os.path.isfile(path) else 0

def check_files(run_dir):
    """Every file under a final name is complete (temp files from atomic_write are hidden .*.tmp names)."""
    for path in glob.glob(os.path.join(run_dir, '*')):
        name = os.path.basename(path)
        if name.endswith('.pkl'):
            with open(path, 'rb') as f:
                legacy.load_network_pkl(f)
        elif name.endswith('.pt'):
            checkpoint.load(path)
        elif name.endswith('.png'):
            PIL.Image.open(path).verify()
        elif name.endswith('.jsonl'):
            text = open(path).read()
            assert text == '' or text.endswith('\n'), f'{name}: torn last line'
            [json.loads(l) for l in text.splitlines()]
        elif name.endswith('.json'):
            json.load(open(path))

def resumed_ticks(log):
    m = re.search(r'Resuming from ".*checkpoint-\d+-tick(\d+)\.pt"', open(log).read())
    return int(m.group(1)) if m else 0

@pytest.mark.slow
def test_sigkill_and_resume_auto(tmp_path):
    data = _tiny.make_tiny_zip(str(tmp_path / 'tiny32.zip'))
    out = str(tmp_path / 'runs')

    # 1. Kill during a training step: shortly after the first checkpoint appeared.
    p = start(out, data, str(tmp_path / 'log1.txt'))
    wait_for(lambda: run_dirs(out) and checkpoint.list_checkpoints(run_dirs(out)[0]), p)
    time.sleep(0.5)
    p.send_signal(signal.SIGKILL)
    p.wait()
    run_dir = run_dirs(out)[0]
    done1 = completed_ticks(run_dir)
    check_files(run_dir)

    # 2. Resume, then kill while a snapshot/checkpoint is being written (the test hook stalls before the rename).
    p = start(out, data, str(tmp_path / 'log2.txt'), EG3D_TEST_WRITE_DELAY='30')
    wait_for(lambda: '[test hook] writing' in open(tmp_path / 'log2.txt').read(), p)
    assert glob.glob(os.path.join(run_dir, '.*.tmp'))  # the half-done write exists only as a temp file
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert resumed_ticks(tmp_path / 'log2.txt') >= done1 - 1  # at most one tick lost
    done2 = completed_ticks(run_dir)
    check_files(run_dir)

    # 3. Resume to the end.
    p = start(out, data, str(tmp_path / 'log3.txt'))
    assert p.wait(timeout=300) == 0, open(tmp_path / 'log3.txt').read()[-3000:]
    assert resumed_ticks(tmp_path / 'log3.txt') >= done2 - 1
    assert run_dirs(out) == [run_dir]  # every restart continued the same run
    check_files(run_dir)
    assert not glob.glob(os.path.join(run_dir, '.*.tmp'))  # stale temp files were cleaned up on resume
    ticks = [s['Progress/tick']['mean'] for s in _tiny.stats_lines(run_dir)]
    assert ticks == [0, 1, 2, 3]
    final = checkpoint.load(checkpoint.list_checkpoints(run_dir)[-1][1])
    assert final['cur_nimg'] == 14
