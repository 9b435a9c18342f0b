"""Exact resume: a run stopped after 2 ticks and continued with --resume=<run dir> ends bit-identical (weights,
optimizer, ADA, RNG, sampler) to an uninterrupted run; --resume=auto then finds the finished run."""

import glob
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _tiny  # noqa: E402

from training import checkpoint  # noqa: E402

RUN = '00000-ffhq-tiny32-gpus1-batch2-gamma1'
# ADA on, density reg every 2 steps, one DataLoader worker (prefetches ahead of the loop): all must resume exactly.
EXTRA = ['--aug=ada', '--density_reg_every=2', '--workers=1']

def assert_same(a, b, path=''):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f'{path} differs'
    elif isinstance(a, dict):
        assert set(a) == set(b), f'{path}: keys {sorted(set(a) ^ set(b))}'
        for k in a:
            if k != 'timestamp':
                assert_same(a[k], b[k], f'{path}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f'{path}: length'
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{path}[{i}]')
    else:
        assert a == b or (a != a and b != b), f'{path}: {a!r} != {b!r}'

@pytest.mark.slow
def test_resumed_run_matches_uninterrupted_run_bit_for_bit(tmp_path):
    data = _tiny.make_tiny_zip(str(tmp_path / 'tiny32.zip'))
    a_out, b_out = str(tmp_path / 'a'), str(tmp_path / 'b')
    _tiny.run_train(a_out, data, '--kimg=0.010', *EXTRA)                    # ticks end at nimg 2, 6, 10
    _tiny.run_train(b_out, data, '--kimg=0.006', *EXTRA)                    # stops after 2 ticks
    b_dir = os.path.join(b_out, RUN)
    r = _tiny.run_train(b_out, data, '--kimg=0.010', '--resume', b_dir, *EXTRA)
    assert 'Resuming from' in r.stdout and 'checkpoint-000000-tick000002.pt' in r.stdout
    assert sorted(os.listdir(b_out)) == [RUN]  # same run dir, no new one

    a = checkpoint.load(os.path.join(a_out, RUN, 'checkpoint-000000-tick000003.pt'))
    b = checkpoint.load(os.path.join(b_dir, 'checkpoint-000000-tick000003.pt'))
    assert a['cur_nimg'] == 10 and a['batch_idx'] == 5
    assert_same(a, b)  # every tensor and counter, incl. Adam moments, augment p, RNG and sampler state
    assert a['optimizers']['G']['state']  # Adam moments exist: the comparison is not vacuous

    # Logs continue in place: one stats line per tick, the log has both sessions.
    ticks = [s['Progress/tick']['mean'] for s in _tiny.stats_lines(b_dir)]
    assert ticks == [0, 1, 2]
    assert open(os.path.join(b_dir, 'log.txt')).read().count('Training for') == 2
    assert len(glob.glob(os.path.join(b_dir, 'checkpoint-*.pt'))) == 2  # --keep-ckpts default

    # --resume=auto with the same options picks that finished run and does nothing more.
    r = _tiny.run_train(b_out, data, '--kimg=0.010', '--resume=auto', *EXTRA)
    assert 'nothing to do' in r.stdout and sorted(os.listdir(b_out)) == [RUN]
