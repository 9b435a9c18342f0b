"""Divergence guard end to end (in-process tiny runs): a forced NaN triggers a rollback and training finishes;
a NaN that keeps coming back makes the guard give up with a clear message."""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _tiny  # noqa: E402

import dnnlib  # noqa: E402
from torch_utils import training_stats  # noqa: E402
from training import checkpoint, training_loop  # noqa: E402
from training.divergence import TrainingDiverged  # noqa: E402

@pytest.fixture(scope='module')
def tiny_zip(tmp_path_factory):
    return _tiny.make_tiny_zip(str(tmp_path_factory.mktemp('data') / 'tiny32.zip'))

def run_inprocess(tmp_path, data, nan_from_nimg, times, *args):
    c = _tiny.tiny_config(str(tmp_path), data, '--kimg=0.010', '--aug=ada', *args)
    c.loss_kwargs.class_name = 'tests.reliability._nan_loss.NaNLoss'
    c.loss_kwargs.nan_from_nimg, c.loss_kwargs.times = nan_from_nimg, times
    c.run_dir = str(tmp_path / 'run')
    os.makedirs(c.run_dir)
    training_stats.reset(process=True)
    logger = dnnlib.util.Logger(file_name=os.path.join(c.run_dir, 'log.txt'), file_mode='a', should_flush=True)
    try:
        training_loop.training_loop(rank=0, device=torch.device('cpu'), **c)
    finally:
        logger.close()
        training_stats.reset(process=True)
    return c.run_dir

def test_nan_triggers_rollback_and_training_finishes(tiny_zip, tmp_path):
    # Ticks end at nimg 2, 6, 10. NaN in the step at cur_nimg=2 (tick 1) -> rollback to the checkpoint after tick 0.
    run_dir = run_inprocess(tmp_path, tiny_zip, 2, 1, '--guard-lr-factor=0.5', '--guard-gamma-factor=2')
    log = open(os.path.join(run_dir, 'log.txt')).read()
    assert 'Divergence guard: non-finite loss (Loss/D/loss = nan) at tick 1' in log, log[-2000:]
    assert 'rolled back to checkpoint-000000-tick000001.pt' in log and 'learning rates x0.5, R1 gamma x2' in log
    stats = _tiny.stats_lines(run_dir)
    guard_lines = [s for s in stats if 'Guard/rollback' in s]
    assert len(guard_lines) == 1 and guard_lines[0]['Guard/failed_tick']['mean'] == 1
    ticks = [s['Progress/tick']['mean'] for s in stats if 'Guard/rollback' not in s]
    assert ticks == [0, 1, 2]  # the failed tick's line never made it; the replayed tick 1 did
    assert all(torch.isfinite(torch.tensor(s['Loss/D/loss']['mean'])) for s in stats if 'Loss/D/loss' in s)
    final = checkpoint.load(checkpoint.list_checkpoints(run_dir)[-1][1])
    assert final['cur_nimg'] == 10 and final['guard']['total_rollbacks'] == 1
    assert final['guard']['lr_scale'] == 0.5 and final['guard']['gamma_scale'] == 2
    assert final['optimizers']['G']['param_groups'][0]['lr'] == pytest.approx(0.0025 * 0.5 * 4 / 5)  # lazy reg ratio 4/5
    assert all(torch.isfinite(v).all() for v in final['G'].values() if v.is_floating_point())

@pytest.mark.slow
def test_guard_gives_up_after_retries(tiny_zip, tmp_path):
    with pytest.raises(TrainingDiverged, match=r'training diverged \(non-finite loss .*1 rollback\(s\) did not help; giving up'):
        run_inprocess(tmp_path, tiny_zip, 2, -1, '--guard-retries=1')
    log = open(os.path.join(tmp_path / 'run', 'log.txt')).read()
    assert log.count('Divergence guard:') == 1
