"""Tests for torch_utils.misc: constants, shape asserts, sampler (incl. resume), copying, DDP helpers, summary."""

import gc
import os
import re
import warnings

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from torch_utils import misc

#----------------------------------------------------------------------------

def test_constant_cached_and_broadcast():
    a = misc.constant([1, 2, 3])
    assert a.dtype == torch.get_default_dtype() and a.device.type == 'cpu'
    assert misc.constant([1, 2, 3]) is a # cached
    b = misc.constant(np.float32(2), shape=[2, 3], dtype=torch.float64)
    assert b.shape == (2, 3) and b.dtype == torch.float64 and torch.all(b == 2)
    assert misc.constant([1, 2, 3], dtype=torch.int64) is not a
    c = misc.constant(np.ones([1, 2, 2, 3]), shape=[1, 2, 2, 3], memory_format=torch.channels_last)
    assert c.is_contiguous(memory_format=torch.channels_last)

def test_assert_shape():
    x = torch.zeros(2, 3, 4)
    misc.assert_shape(x, [2, None, 4])
    with pytest.raises(AssertionError, match='Wrong number of dimensions'):
        misc.assert_shape(x, [2, 3])
    with pytest.raises(AssertionError, match='Wrong size for dimension 1'):
        misc.assert_shape(x, [2, 5, 4])
    misc.assert_shape(x, [torch.tensor(2), None, 4]) # tensor-valued sizes go through symbolic asserts
    with pytest.raises(Exception, match='Wrong size for dimension 0'):
        misc.assert_shape(x, [torch.tensor(7), None, 4])
    def f(t):
        misc.assert_shape(t, [None, 3, 4])
        return t * 2
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning) # torch.jit.trace deprecation notice
        warnings.simplefilter('error', torch.jit.TracerWarning) # the assert itself must not warn while tracing
        traced = torch.jit.trace(f, (x,))
    assert torch.equal(traced(x), x * 2)

def test_suppress_tracer_warnings_restores_filters():
    before = list(warnings.filters)
    with misc.suppress_tracer_warnings():
        assert warnings.filters[0][2] is torch.jit.TracerWarning
        warnings.warn('ignored', torch.jit.TracerWarning)
    assert warnings.filters == before

def test_profiled_function():
    @misc.profiled_function
    def my_op(x):
        return x + 1
    assert my_op.__name__ == 'my_op'
    with torch.autograd.profiler.profile() as prof:
        assert my_op(torch.ones(1)).item() == 2
    assert any(evt.name == 'my_op' for evt in prof.function_events)

#----------------------------------------------------------------------------

def _reference_stream(n, rank, num_replicas, shuffle, seed, window_size, count):
    """Independent re-statement of the NVlabs InfiniteSampler stream (spec b.2)."""
    order = np.arange(n)
    rnd = np.random.RandomState(seed) if shuffle else None
    if shuffle:
        rnd.shuffle(order)
    window = int(np.rint(n * window_size)) if shuffle else 0
    out, idx = [], 0
    while len(out) < count:
        i = idx % n
        if idx % num_replicas == rank:
            out.append(int(order[i]))
        if window >= 2:
            j = (i - rnd.randint(window)) % n
            order[i], order[j] = order[j], order[i]
        idx += 1
    return out

@pytest.mark.parametrize('rank,num_replicas,shuffle,window', [(0, 1, True, 0.5), (1, 3, True, 0.3), (0, 2, False, 0.5)])
def test_infinite_sampler_matches_reference(rank, num_replicas, shuffle, window):
    sampler = misc.InfiniteSampler(list(range(11)), rank=rank, num_replicas=num_replicas, shuffle=shuffle, seed=5,
                                   window_size=window)
    it = iter(sampler)
    got = [int(next(it)) for _ in range(40)]
    assert got == _reference_stream(11, rank, num_replicas, shuffle, 5, window, 40)
    if not shuffle:
        assert got[:5] == list(range(rank, 11, num_replicas))[:5]

def test_infinite_sampler_resume_exactly():
    data = list(range(13))
    full = misc.InfiniteSampler(data, rank=1, num_replicas=2, seed=3)
    it = iter(full)
    stream = [int(next(it)) for _ in range(60)]

    part = misc.InfiniteSampler(data, rank=1, num_replicas=2, seed=3)
    it = iter(part)
    first = [int(next(it)) for _ in range(25)]
    state = part.state_dict()
    torch.save(state, os.devnull) # the state must be serialisable with the checkpoint
    resumed = misc.InfiniteSampler(data, rank=1, num_replicas=2, seed=3)
    resumed.load_state_dict(state)
    it2 = iter(resumed)
    assert first + [int(next(it2)) for _ in range(35)] == stream
    assert int(next(iter(resumed))) == stream[0] # without a pending state, iter() starts a fresh stream

    with pytest.raises(ValueError, match='items'):
        misc.InfiniteSampler(list(range(5)), rank=1, num_replicas=2, seed=3).load_state_dict(state)
    with pytest.raises(ValueError, match='rank'):
        misc.InfiniteSampler(data, rank=0, num_replicas=2, seed=3).load_state_dict(state)

def test_infinite_sampler_with_dataloader():
    sampler = misc.InfiniteSampler(list(range(7)), seed=1)
    loader = torch.utils.data.DataLoader(list(range(7)), sampler=sampler, batch_size=3)
    batch = next(iter(loader))
    assert batch.tolist() == _reference_stream(7, 0, 1, True, 1, 0.5, 3)
    with pytest.raises(ValueError):
        misc.InfiniteSampler([], seed=0)

#----------------------------------------------------------------------------

class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 3)
        self.register_buffer('w_avg', torch.zeros(3))

    def forward(self, x):
        return dict(out=self.fc(x) + self.w_avg, aux=x.sum(1))

def test_params_and_buffers_and_copy():
    a, b = _Tiny(), _Tiny()
    assert [n for n, _ in misc.named_params_and_buffers(a)] == ['fc.weight', 'fc.bias', 'w_avg']
    assert len(misc.params_and_buffers(a)) == 3
    a.w_avg.fill_(5)
    b.fc.bias.requires_grad_(False)
    misc.copy_params_and_buffers(a, b, require_all=True)
    for (_, ta), (_, tb) in zip(misc.named_params_and_buffers(a), misc.named_params_and_buffers(b)):
        assert torch.equal(ta, tb) and ta.data_ptr() != tb.data_ptr()
    assert b.fc.weight.requires_grad and not b.fc.bias.requires_grad # dst's flags kept

    bigger = torch.nn.Sequential()
    bigger.add_module('fc', torch.nn.Linear(2, 3))
    bigger.register_buffer('extra', torch.ones(1))
    misc.copy_params_and_buffers(a, bigger) # missing names are fine without require_all
    assert torch.equal(bigger.fc.weight, a.fc.weight)
    with pytest.raises(AssertionError, match='extra'):
        misc.copy_params_and_buffers(a, bigger, require_all=True)
    wrong = torch.nn.Sequential()
    wrong.add_module('fc', torch.nn.Linear(2, 4))
    with pytest.raises(ValueError, match='shape mismatch'):
        misc.copy_params_and_buffers(a, wrong)

def test_print_module_summary(capsys):
    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = _Tiny()
            self.head = torch.nn.Linear(3, 1)
        def forward(self, x):
            return self.head(self.body(x)['out'])
    model = Wrapper()
    out = misc.print_module_summary(model, [torch.zeros(4, 2)])
    assert out.shape == (4, 1)
    text = capsys.readouterr().out
    lines = [re.split(r'\s{2,}', l.strip()) for l in text.strip().splitlines()]
    assert lines[0] == ['Wrapper', 'Parameters', 'Buffers', 'Output shape', 'Datatype']
    rows = {l[0]: l for l in lines}
    assert rows['body.fc'][1:3] == ['9', '-']
    assert rows['body:0'][1:3] == ['-', '3'] and rows['body:1'][3] == '[4]' # dict output: two tensors
    assert rows['head'][1] == '4' and rows['head'][3] == '[4, 1]'
    assert rows['Total'][1:3] == ['13', '3']
    assert not model.body._forward_hooks and not model._forward_pre_hooks # hooks removed

def test_ddp_sync_without_ddp():
    m = torch.nn.Linear(1, 1)
    with misc.ddp_sync(m, sync=False):
        pass # not DDP -> plain no-op

#----------------------------------------------------------------------------
# Two-process gloo checks for check_ddp_consistency and ddp_sync (CPU only).

def _ddp_worker(rank, world_size, init_file, result_dir):
    torch.distributed.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        m = _Tiny()
        misc.check_ddp_consistency(m) # identical everywhere: passes
        m.w_avg.fill_(float(rank)) # differs on rank 1
        m.fc.weight.data[0, 0] = float('nan') # NaNs count as equal
        try:
            misc.check_ddp_consistency(m)
            outcome = 'passed'
        except AssertionError as err:
            outcome = str(err)
        misc.check_ddp_consistency(m, ignore_regex=r'.*\.w_avg') # ignored: passes on all ranks

        ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(1, 1, bias=False))
        with misc.ddp_sync(ddp, sync=False):
            ddp(torch.full([1, 1], float(rank + 1))).sum().backward()
        grad_local = ddp.module.weight.grad.item()
        ddp.module.weight.grad = None
        with misc.ddp_sync(ddp, sync=True):
            ddp(torch.full([1, 1], float(rank + 1))).sum().backward()
        grad_synced = ddp.module.weight.grad.item()
        with open(os.path.join(result_dir, f'{rank}.txt'), 'w') as f:
            f.write(f'{outcome}|{grad_local}|{grad_synced}')
        del ddp # a DDP reducer that outlives its gloo group aborts the process at exit (about 1 run in 3);
        gc.collect() # DDP sits in reference cycles, so `del` alone does not free it
    finally:
        torch.distributed.destroy_process_group()

def test_ddp_helpers_two_processes(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / 'init'), str(tmp_path)), nprocs=2, join=True)
    r0 = (tmp_path / '0.txt').read_text().split('|')
    r1 = (tmp_path / '1.txt').read_text().split('|')
    assert r0[0] == 'passed'
    assert 'w_avg' in r1[0] and 'differs from rank 0' in r1[0]
    assert float(r0[1]) == 1.0 and float(r1[1]) == 2.0 # no_sync: local gradients
    assert float(r0[2]) == float(r1[2]) == 1.5 # synced: averaged

#----------------------------------------------------------------------------
