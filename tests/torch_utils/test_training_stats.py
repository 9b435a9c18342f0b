"""Tests for torch_utils.training_stats (single process vs numpy, and a 2-process gloo all_reduce)."""

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from torch_utils import distributed, training_stats

#----------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def fresh_stats():
    training_stats.reset(process=True)
    yield
    training_stats.reset(process=True)

def test_single_process_moments():
    training_stats.report('early', 100.0) # reported before the collector exists: not counted
    collector = training_stats.Collector(regex='Loss/.*')
    values = [1.0, 2.5, -3.0, 4.0]
    assert training_stats.report('Loss/G', torch.tensor(values[:2])) is not None
    training_stats.report('Loss/G', np.array(values[2:]))
    training_stats.report('Loss/D', 7)
    training_stats.report('Loss/empty', [])
    training_stats.report('Other/x', 1.0)
    collector.update()
    assert collector.names() == ['Loss/G', 'Loss/D', 'Loss/empty']
    assert collector.num('Loss/G') == 4
    assert collector.mean('Loss/G') == pytest.approx(np.mean(values))
    assert collector['Loss/G'] == pytest.approx(np.mean(values))
    assert collector.std('Loss/G') == pytest.approx(np.std(values))
    assert collector.std('Loss/D') == 0 and collector.mean('Loss/D') == 7
    assert collector.num('Loss/empty') == 0 and math.isnan(collector.mean('Loss/empty'))
    assert math.isnan(collector.std('Loss/empty'))
    d = collector.as_dict()
    assert set(d) == {'Loss/G', 'Loss/D', 'Loss/empty'} and d['Loss/G'].num == 4 and d['Loss/D'].std == 0
    with pytest.raises(AssertionError):
        collector.mean('Other/x')

    # Next interval: only new data; keep_previous keeps stale averages, keep_previous=False drops them.
    fresh = training_stats.Collector(regex='Loss/.*', keep_previous=False)
    training_stats.report('Loss/G', [10.0])
    collector.update()
    fresh.update()
    assert collector.num('Loss/G') == 1 and collector.mean('Loss/G') == 10
    assert collector.mean('Loss/D') == 7 # kept
    assert fresh.num('Loss/D') == 0 and math.isnan(fresh.mean('Loss/D'))
    training_stats.report('Loss/G', [float('inf')])
    collector.update()
    assert math.isnan(collector.std('Loss/G'))

def test_report0_and_init_order():
    training_stats.init_multiprocessing(rank=1, sync_device=None)
    collector = training_stats.Collector()
    training_stats.report0('r0', 5.0)
    collector.update()
    assert collector.names() == ['r0'] and collector.num('r0') == 0 # rank 1: name only
    with pytest.raises(RuntimeError):
        training_stats.init_multiprocessing(rank=0, sync_device=None) # too late after an update()

#----------------------------------------------------------------------------

def _worker(rank, world_size, init_file, result_dir):
    device = distributed.init(rank=rank, world_size=world_size, init_method=f'file://{init_file}', device='cpu')
    try:
        assert device.type == 'cpu' and distributed.get_rank() == rank and distributed.get_world_size() == 2
        collector = training_stats.Collector()
        # rank 0 reports [0, 1, 2], rank 1 reports [10, 11]: pooled over ranks, not mean of means.
        values = [0.0, 1.0, 2.0] if rank == 0 else [10.0, 11.0]
        training_stats.report('Loss/x', torch.tensor(values))
        training_stats.report0('Progress/kimg', 3.0 + rank)
        collector.update()
        result = dict(num=collector.num('Loss/x'), mean=collector.mean('Loss/x'), std=collector.std('Loss/x'),
                      kimg=collector.mean('Progress/kimg'), kimg_num=collector.num('Progress/kimg'))
        with open(os.path.join(result_dir, f'{rank}.json'), 'w') as f:
            json.dump(result, f)
    finally:
        distributed.cleanup()

def test_reset_zeroes_moments_and_keeps_names():
    collector = training_stats.Collector(regex='.*')
    training_stats.report('Loss/a', [float('nan')])
    collector.update()
    assert collector.num('Loss/a') == 1 and np.isnan(collector.mean('Loss/a'))
    training_stats.reset()  # without it, every later delta of Loss/a would stay NaN
    collector.reset()
    training_stats.report('Loss/a', [1.0, 3.0])
    collector.update()
    assert collector.names() == ['Loss/a']
    assert collector.num('Loss/a') == 2 and collector.mean('Loss/a') == 2.0

def test_pending_round_trip():
    ada = training_stats.Collector(regex='Loss/signs/real')
    other = training_stats.Collector(regex='.*')
    assert ada.pending('Loss/signs/real') is None
    training_stats.report('Loss/signs/real', [1.0, -1.0, 1.0])
    other.update()  # the tick-end update gathers what ADA has not read yet
    pending = ada.pending('Loss/signs/real')
    assert pending.tolist() == [3.0, 1.0, 3.0]
    fresh = training_stats.Collector(regex='Loss/signs/real')  # as after a resume
    fresh.set_pending('Loss/signs/real', pending)
    training_stats.report('Loss/signs/real', [1.0])
    fresh.update()
    assert fresh.num('Loss/signs/real') == 4 and fresh.mean('Loss/signs/real') == 0.5

def test_two_process_all_reduce(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / 'init'), str(tmp_path)), nprocs=2, join=True)
    pooled = [0.0, 1.0, 2.0, 10.0, 11.0]
    for rank in range(2):
        r = json.loads((tmp_path / f'{rank}.json').read_text())
        assert r['num'] == 5
        assert r['mean'] == pytest.approx(np.mean(pooled))
        assert r['std'] == pytest.approx(np.std(pooled))
        assert r['kimg'] == 3.0 and r['kimg_num'] == 1 # report0: only rank 0's value

def test_distributed_single_process_defaults(monkeypatch):
    for var in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR'):
        monkeypatch.delenv(var, raising=False)
    assert distributed.init(device='cpu') == torch.device('cpu')
    assert distributed.get_rank() == 0 and distributed.get_world_size() == 1 and not distributed.is_initialized()
    with pytest.raises(ValueError, match='init_method'):
        distributed.init(rank=0, world_size=2, device='cpu')

def test_distributed_explicit_init_method_makes_a_group_of_one(tmp_path, monkeypatch):
    # train.py under a one-rank torchrun passes init_method='env://': the group exists as with more ranks.
    for var in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR'):
        monkeypatch.delenv(var, raising=False)
    try:
        assert distributed.init(init_method=f'file://{tmp_path / "init"}', device='cpu') == torch.device('cpu')
        assert distributed.is_initialized() and distributed.get_world_size() == 1
        assert torch.distributed.get_backend() == 'gloo'
    finally:
        distributed.cleanup()
    assert not distributed.is_initialized()

#----------------------------------------------------------------------------
