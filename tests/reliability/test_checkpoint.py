"""Unit tests of training/checkpoint.py (files, RNG, ADA statistics) and training/divergence.py (guard verdicts)."""

import json
import os
import random

import numpy as np
import pytest
import torch

import dnnlib
from torch_utils import misc, training_stats
from training import checkpoint
from training.divergence import DivergenceGuard, TrainingDiverged

def tiny_state(cur_nimg=0, cur_tick=1):
    net = torch.nn.Linear(2, 2)
    return dict(format=checkpoint.FORMAT, version=checkpoint.VERSION, cur_nimg=cur_nimg, cur_tick=cur_tick, batch_idx=1,
                num_gpus=1, G=net.state_dict(), D={}, G_ema={}, optimizers={}, rng=[checkpoint.capture_rng(torch.device('cpu'))],
                sampler=[], jsonl_lines={})

def test_rng_roundtrip_and_weights_only_load(tmp_path):
    torch.manual_seed(1); np.random.seed(2); random.seed(3)
    path = str(tmp_path / checkpoint.checkpoint_name(4000, 7))
    checkpoint.save(tiny_state(4000, 7), path)
    expect = (torch.rand(3), np.random.rand(3), random.random())
    state = checkpoint.load(path)  # torch.load(weights_only=True) inside: no code can run
    checkpoint.restore_rng(state['rng'][0], torch.device('cpu'))
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expect[0], got[0]) and np.array_equal(expect[1], got[1]) and expect[2] == got[2]
    assert os.path.basename(path) == 'checkpoint-000004-tick000007.pt' and os.listdir(tmp_path) == [os.path.basename(path)]

def test_sampler_state_roundtrip():
    ds = list(range(10))
    a = misc.InfiniteSampler(ds, seed=3)
    it = iter(a)
    [next(it) for _ in range(7)]
    b = misc.InfiniteSampler(ds, seed=3)
    b.load_state_dict(checkpoint.sampler_state_from_safe(checkpoint.sampler_state_to_safe(a.state_dict())))
    assert [next(it) for _ in range(15)] == [x for x, _ in zip(iter(b), range(15))]

def test_find_latest_good_skips_corrupt_and_prunes(tmp_path, capsys):
    run = str(tmp_path)
    for t in (1, 2, 3):
        checkpoint.save(tiny_state(t * 1000, t), os.path.join(run, checkpoint.checkpoint_name(t * 1000, t)))
    newest = os.path.join(run, checkpoint.checkpoint_name(3000, 3))
    open(newest, 'r+b').truncate(200)
    path, state = checkpoint.find_latest_good(run)
    assert state['cur_tick'] == 2 and 'Warning: skipping checkpoint' in capsys.readouterr().out
    assert checkpoint.find_latest_good(run, max_ticks=1)[1]['cur_tick'] == 1
    checkpoint.prune(run, keep=2)
    assert [t for t, _ in checkpoint.list_checkpoints(run)] == [2, 3]
    assert checkpoint.discard_newer(run, 2) == [newest] and [t for t, _ in checkpoint.list_checkpoints(run)] == [2]
    open(path, 'wb').write(b'garbage')
    with pytest.raises(IOError, match='none of the 1 training checkpoints is readable'):
        checkpoint.find_latest_good(run)
    assert checkpoint.find_latest_good(str(tmp_path / 'nothing_here')) is None

def test_jsonl_append_truncate_and_temp_cleanup(tmp_path):
    run, path = str(tmp_path), str(tmp_path / 'stats.jsonl')
    for i in range(3):
        dnnlib.util.append_jsonl(path, {'i': i})
    open(path, 'a').write('{"torn": ')  # e.g. power loss mid-line
    open(tmp_path / 'metric-x.jsonl', 'w').write('{"a": 1}\n')
    open(tmp_path / '.network-snapshot-000000.pkl.k2j3h4g5.tmp', 'w').write('half')
    checkpoint.truncate_jsonl_files(run, {'stats.jsonl': 2})
    assert [json.loads(l)['i'] for l in open(path)] == [0, 1] and open(tmp_path / 'metric-x.jsonl').read() == ''
    assert checkpoint.cleanup_temp_files(run) == ['.network-snapshot-000000.pkl.k2j3h4g5.tmp']

def test_ada_pending_statistics_survive_resume():
    training_stats.reset(process=True)
    ada = training_stats.Collector(regex='Loss/signs/real')
    everything = training_stats.Collector(regex='.*')
    training_stats.report('Loss/signs/real', [1.0, 1.0, -1.0])
    everything.update()  # tick end: all counters synced
    pending = checkpoint._ada_pending(ada)
    training_stats.reset(process=True)  # "new process"
    ada2 = training_stats.Collector(regex='Loss/signs/real')
    checkpoint._restore_ada_pending(ada2, pending)
    training_stats.report('Loss/signs/real', [1.0])
    ada2.update()
    assert ada2.num('Loss/signs/real') == 4 and ada2['Loss/signs/real'] == pytest.approx(0.5)
    training_stats.reset(process=True)

def test_config_diff_and_classify(tmp_path):
    a = dict(loss_kwargs=dict(r1_gamma=1), total_kimg=10, run_dir='x')
    assert checkpoint.config_diff(a, dict(a, total_kimg=20, run_dir='y')) == []
    assert checkpoint.config_diff(a, dict(a, loss_kwargs=dict(r1_gamma=2))) == ['loss_kwargs.r1_gamma']
    assert checkpoint.classify_resume('auto') == 'auto' and checkpoint.classify_resume('x.pkl') == 'pkl'
    assert checkpoint.classify_resume(str(tmp_path)) == 'run_dir'
    with pytest.raises(ValueError, match='no such file or directory'):
        checkpoint.classify_resume(str(tmp_path / 'missing'))

#----------------------------------------------------------------------------

def guard_with(**kw):
    return DivergenceGuard(device='cpu', **kw), [torch.nn.Linear(2, 2)]

def test_guard_flags_nonfinite_and_spikes():
    g, mods = guard_with(spike_factor=100, spike_warmup=3)
    assert g.check(0, {'Loss/G/loss': (4, 0.7)}, mods) is None
    assert 'non-finite loss (Loss/G/loss = nan)' in g.check(1, {'Loss/G/loss': (4, float('nan'))}, mods)[0]
    g.observe_grads(torch.tensor([1.0, float('inf')]))
    assert 'non-finite gradients in 1' in g.check(2, {}, mods)[0]
    for t in range(3):
        g.observe_grads(torch.tensor([3.0, 4.0]))
        assert g.check(3 + t, {}, mods) is None
    g.observe_grads(torch.tensor([3000.0, 4000.0]))
    assert 'gradient norm spike' in g.check(6, {}, mods)[0]
    with torch.no_grad():
        mods[0].weight[0, 0] = float('nan')
    assert g.check(7, {}, mods)[0].startswith('non-finite parameters')

def test_guard_collapse_rolls_back_before_onset_and_gives_up():
    g, mods = guard_with(collapse_ticks=3, retries=1, lr_factor=0.5)
    dominated = lambda loss: {'Loss/signs/real': (8, 1.0), 'Loss/signs/fake': (8, -1.0), 'Loss/G/loss': (8, loss)}
    assert g.check(10, dominated(1.0), mods) is None and g.check(11, dominated(2.0), mods) is None
    reason, max_ticks = g.check(12, dominated(3.0), mods)
    assert reason.startswith('D dominates') and max_ticks == 10
    assert 'learning rates x0.5' in g.rollback(reason, 12)
    opt = torch.optim.Adam(mods[0].parameters(), lr=0.1)
    g.apply({'G': [0.1]}, {'G': opt}, None, None)
    assert opt.param_groups[0]['lr'] == pytest.approx(0.05)
    with pytest.raises(TrainingDiverged, match='giving up'):
        g.rollback(reason, 12)
    g2, _ = guard_with(retries=1)
    g2.rollback('x', 5)
    g2.passed(6)  # got past the failing tick: the retry budget is restored
    assert g2.rollbacks == 0 and g2.rollback('y', 9)
