"""Miscellaneous PyTorch helpers used by network and training code (shape asserts, constants, DDP, summaries)."""

import contextlib
import functools
import re
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

import dnnlib

#----------------------------------------------------------------------------
# Cached construction of constant tensors. Avoids host->device copies of the same small tensor
# (filters, gains) on every forward pass.

_constant_cache = dict()

def constant(value: Any, shape: Optional[Sequence[int]] = None, dtype: Optional[torch.dtype] = None,
             device: Optional[torch.device] = None, memory_format: Optional[torch.memory_format] = None) -> torch.Tensor:
    """Return a cached tensor holding `value` (broadcast to `shape` if given). Do not modify the result."""
    value = np.asarray(value)
    if shape is not None:
        shape = tuple(shape)
    if dtype is None:
        dtype = torch.get_default_dtype()
    device = torch.device('cpu') if device is None else torch.device(device)
    if memory_format is None:
        memory_format = torch.contiguous_format

    key = (value.shape, value.dtype, value.tobytes(), shape, dtype, device, memory_format)
    tensor = _constant_cache.get(key, None)
    if tensor is None:
        tensor = torch.as_tensor(value.copy(), dtype=dtype, device=device)
        if shape is not None:
            tensor, _ = torch.broadcast_tensors(tensor, torch.empty(shape, device=device))
        tensor = tensor.contiguous(memory_format=memory_format)
        _constant_cache[key] = tensor
    return tensor

#----------------------------------------------------------------------------
# Aliases kept for API compatibility with code written for torch < 1.8.

nan_to_num = torch.nan_to_num
symbolic_assert = torch._assert # pylint: disable=protected-access

#----------------------------------------------------------------------------

@contextlib.contextmanager
def suppress_tracer_warnings() -> Iterator[None]:
    """Ignore torch.jit.TracerWarning inside the context (shape checks are legitimate while tracing)."""
    flt = ('ignore', None, torch.jit.TracerWarning, None, 0)
    warnings.filters.insert(0, flt)
    _filters_mutated()
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            warnings.filters.remove(flt)
        _filters_mutated()

def _filters_mutated() -> None:
    # Invalidate the warnings registry caches after editing warnings.filters directly.
    fn = getattr(warnings, '_filters_mutated', None) or getattr(warnings, '_filters_mutated_lock_held', None)
    if fn is not None:
        with contextlib.suppress(Exception):
            fn()

#----------------------------------------------------------------------------

def assert_shape(tensor: torch.Tensor, ref_shape: Sequence[Any]) -> None:
    """Assert that the tensor has the given shape; None entries match any size. Works while tracing."""
    if tensor.ndim != len(ref_shape):
        raise AssertionError(f'Wrong number of dimensions: got {tensor.ndim}, expected {len(ref_shape)}')
    for idx, (size, ref_size) in enumerate(zip(tensor.shape, ref_shape)):
        if ref_size is None:
            continue
        if isinstance(ref_size, torch.Tensor):
            with suppress_tracer_warnings(): # as_tensor results are registered as constants
                symbolic_assert(torch.equal(torch.as_tensor(size), ref_size), f'Wrong size for dimension {idx}')
        elif isinstance(size, torch.Tensor):
            with suppress_tracer_warnings():
                symbolic_assert(torch.equal(size, torch.as_tensor(ref_size)),
                                f'Wrong size for dimension {idx}: expected {ref_size}')
        elif size != ref_size:
            raise AssertionError(f'Wrong size for dimension {idx}: got {size}, expected {ref_size}')

#----------------------------------------------------------------------------

def profiled_function(fn: Callable) -> Callable:
    """Decorator: show the function as a named range in the PyTorch profiler."""
    @functools.wraps(fn)
    def decorator(*args, **kwargs):
        with torch.autograd.profiler.record_function(fn.__name__):
            return fn(*args, **kwargs)
    return decorator

#----------------------------------------------------------------------------
# Endless, optionally shuffled, index stream for training. Consecutive epochs are decorrelated by
# swapping each item with a random recent one (window_size) instead of reshuffling at epoch boundaries.

class InfiniteSampler(torch.utils.data.Sampler):
    """Sampler yielding dataset indices forever, split across `num_replicas` ranks.

    state_dict()/load_state_dict() capture the stream position (step counter, current order, RNG state) so
    that training can resume exactly: after load_state_dict(), the next iter() continues where the saved
    iterator stopped. The position counts indices already handed out; a DataLoader with workers pulls
    `num_workers * prefetch_factor` batches ahead, so those are skipped on resume (deterministically).
    Without load_state_dict(), every iter() starts a fresh stream, as in NVlabs' implementation.
    """

    def __init__(self, dataset: Any, rank: int = 0, num_replicas: int = 1, shuffle: bool = True, seed: int = 0,
                 window_size: float = 0.5):
        if len(dataset) <= 0:
            raise ValueError('InfiniteSampler: the dataset is empty')
        if not (num_replicas > 0 and 0 <= rank < num_replicas):
            raise ValueError(f'InfiniteSampler: invalid rank={rank} for num_replicas={num_replicas}')
        if not 0 <= window_size <= 1:
            raise ValueError(f'InfiniteSampler: window_size must be in [0, 1], got {window_size}')
        super().__init__() # torch >= 2.x: Sampler.__init__ takes no data source
        self.dataset = dataset
        self.rank = rank
        self.num_replicas = num_replicas
        self.shuffle = shuffle
        self.seed = seed
        self.window_size = window_size
        self._pending_state = None # set by load_state_dict(), consumed by the next iter()
        self._live = None          # EasyDict(idx, order, rnd) of the most recent iterator

    def _fresh_state(self) -> dnnlib.EasyDict:
        order = np.arange(len(self.dataset))
        rnd = None
        if self.shuffle:
            rnd = np.random.RandomState(self.seed)
            rnd.shuffle(order)
        return dnnlib.EasyDict(idx=0, order=order, rnd=rnd)

    def __iter__(self) -> Iterator[int]:
        state = self._pending_state if self._pending_state is not None else self._fresh_state()
        self._pending_state = None
        self._live = state
        order, rnd = state.order, state.rnd
        window = int(np.rint(order.size * self.window_size)) if self.shuffle else 0
        while True:
            # One step: pick slot i, then (maybe) swap it with a recent slot. The state is fully updated
            # before yielding, so state_dict() taken between two items is a clean step boundary.
            i = state.idx % order.size
            value = order[i]
            if window >= 2:
                j = (i - rnd.randint(window)) % order.size
                order[i], order[j] = order[j], order[i]
            step = state.idx
            state.idx += 1
            if step % self.num_replicas == self.rank:
                yield value

    def state_dict(self) -> Dict[str, Any]:
        """Position of the most recent iterator (or of the pending/fresh one if none was started)."""
        state = self._live or self._pending_state or self._fresh_state()
        return dict(idx=int(state.idx), order=state.order.copy(),
                    rnd_state=state.rnd.get_state() if state.rnd is not None else None,
                    num_items=int(state.order.size), rank=self.rank, num_replicas=self.num_replicas,
                    shuffle=self.shuffle, seed=self.seed, window_size=self.window_size)

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Make the next iter() continue the stream saved by state_dict()."""
        n = len(self.dataset)
        if int(state_dict['num_items']) != n:
            raise ValueError(f'InfiniteSampler.load_state_dict: state is for {state_dict["num_items"]} items, '
                             f'but the dataset has {n}')
        if bool(state_dict['shuffle']) != self.shuffle or (state_dict['rnd_state'] is None) == self.shuffle:
            raise ValueError('InfiniteSampler.load_state_dict: shuffle setting differs from the saved state')
        for key in ('rank', 'num_replicas', 'window_size'):
            if key in state_dict and state_dict[key] != getattr(self, key):
                raise ValueError(f'InfiniteSampler.load_state_dict: {key}={state_dict[key]} in the saved state, '
                                 f'but this sampler has {key}={getattr(self, key)}')
        rnd = None
        if state_dict['rnd_state'] is not None:
            rnd = np.random.RandomState()
            rnd.set_state(state_dict['rnd_state'])
        self._pending_state = dnnlib.EasyDict(idx=int(state_dict['idx']),
                                              order=np.array(state_dict['order'], dtype=np.int64), rnd=rnd)
        self._live = None

#----------------------------------------------------------------------------
# Parameters and buffers.

def params_and_buffers(module: torch.nn.Module) -> List[torch.Tensor]:
    """All parameters, then all buffers, of `module`."""
    assert isinstance(module, torch.nn.Module)
    return list(module.parameters()) + list(module.buffers())

def named_params_and_buffers(module: torch.nn.Module) -> List[Tuple[str, torch.Tensor]]:
    """All (name, tensor) parameters, then buffers, of `module`."""
    assert isinstance(module, torch.nn.Module)
    return list(module.named_parameters()) + list(module.named_buffers())

@torch.no_grad()
def copy_params_and_buffers(src_module: torch.nn.Module, dst_module: torch.nn.Module, require_all: bool = False) -> None:
    """Copy every parameter/buffer of dst_module that src_module also has (by name); keeps dst's requires_grad."""
    assert isinstance(src_module, torch.nn.Module)
    assert isinstance(dst_module, torch.nn.Module)
    src_tensors = dict(named_params_and_buffers(src_module))
    dst_tensors = named_params_and_buffers(dst_module)
    if require_all:
        missing = [name for name, _ in dst_tensors if name not in src_tensors]
        if missing:
            raise AssertionError(f'copy_params_and_buffers: source lacks {len(missing)} tensor(s): {", ".join(missing[:10])}'
                                 + (' ...' if len(missing) > 10 else ''))
    for name, tensor in dst_tensors:
        if name in src_tensors:
            src = src_tensors[name]
            if src.shape != tensor.shape:
                raise ValueError(f'copy_params_and_buffers: shape mismatch for {name!r}: '
                                 f'source {list(src.shape)}, destination {list(tensor.shape)}')
            tensor.copy_(src.detach()).requires_grad_(tensor.requires_grad)

#----------------------------------------------------------------------------
# Distributed data parallel helpers.

@contextlib.contextmanager
def ddp_sync(module: torch.nn.Module, sync: bool) -> Iterator[None]:
    """Context manager for easily enabling/disabling DistributedDataParallel gradient synchronization."""
    assert isinstance(module, torch.nn.Module)
    if sync or not isinstance(module, torch.nn.parallel.DistributedDataParallel):
        yield
    else:
        with module.no_sync():
            yield

def check_ddp_consistency(module: torch.nn.Module, ignore_regex: Optional[str] = None) -> None:
    """Assert that every parameter/buffer equals rank 0's copy (NaNs count as equal). Collective call."""
    assert isinstance(module, torch.nn.Module)
    for name, tensor in named_params_and_buffers(module):
        fullname = type(module).__name__ + '.' + name
        if ignore_regex is not None and re.fullmatch(ignore_regex, fullname):
            continue
        tensor = tensor.detach()
        if tensor.is_floating_point():
            tensor = nan_to_num(tensor)
        other = tensor.clone()
        torch.distributed.broadcast(tensor=other, src=0)
        if not (tensor == other).all():
            raise AssertionError(f'DDP consistency check failed: {fullname} differs from rank 0')

#----------------------------------------------------------------------------
# Module summary table, built with forward hooks.

def _flatten_tensors(obj: Any) -> List[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for x in obj for t in _flatten_tensors(x)]
    if isinstance(obj, dict): # e.g. the EG3D generator's output dict
        return [t for x in obj.values() for t in _flatten_tensors(x)]
    return []

def print_module_summary(module: torch.nn.Module, inputs: Sequence[Any], max_nesting: int = 3,
                         skip_redundant: bool = True) -> Any:
    """Run module(*inputs), print a table of submodules (parameters, buffers, output shapes), return the output."""
    assert isinstance(module, torch.nn.Module)
    assert not isinstance(module, torch.jit.ScriptModule)
    assert isinstance(inputs, (tuple, list))

    # Record (module, outputs) for every call up to the given nesting depth, innermost first.
    entries = []
    depth = [0]
    def pre_hook(_mod, _inputs):
        depth[0] += 1
    def post_hook(mod, _inputs, outputs):
        depth[0] -= 1
        if depth[0] <= max_nesting:
            entries.append(dnnlib.EasyDict(mod=mod, outputs=_flatten_tensors(outputs)))
    hooks = [mod.register_forward_pre_hook(pre_hook) for mod in module.modules()]
    hooks += [mod.register_forward_hook(post_hook) for mod in module.modules()]
    try:
        outputs = module(*inputs)
    finally:
        for hook in hooks:
            hook.remove()

    # Attribute every tensor to the first (innermost) entry that owns it, so that totals count it once.
    seen = set()
    for e in entries:
        e.unique_params = [t for t in e.mod.parameters() if id(t) not in seen]
        e.unique_buffers = [t for t in e.mod.buffers() if id(t) not in seen]
        e.unique_outputs = [t for t in e.outputs if id(t) not in seen]
        seen |= {id(t) for t in e.unique_params + e.unique_buffers + e.unique_outputs}
    if skip_redundant:
        entries = [e for e in entries if e.unique_params or e.unique_buffers or e.unique_outputs]

    rows = [[type(module).__name__, 'Parameters', 'Buffers', 'Output shape', 'Datatype'], ['---'] * 5]
    names = {mod: name for name, mod in module.named_modules()}
    param_total = buffer_total = 0
    for e in entries:
        name = '<top-level>' if e.mod is module else names.get(e.mod, type(e.mod).__name__)
        num_params = sum(t.numel() for t in e.unique_params)
        num_buffers = sum(t.numel() for t in e.unique_buffers)
        shapes = [str(list(t.shape)) for t in e.outputs] or ['-']
        dtypes = [str(t.dtype).split('.')[-1] for t in e.outputs] or ['-']
        suffix = ':0' if len(e.outputs) >= 2 else ''
        rows.append([name + suffix, str(num_params) if num_params else '-', str(num_buffers) if num_buffers else '-',
                     shapes[0], dtypes[0]])
        for idx in range(1, len(e.outputs)):
            rows.append([f'{name}:{idx}', '-', '-', shapes[idx], dtypes[idx]])
        param_total += num_params
        buffer_total += num_buffers
    rows += [['---'] * 5, ['Total', str(param_total), str(buffer_total), '-', '-']]

    widths = [max(len(cell) for cell in column) for column in zip(*rows)]
    print()
    for row in rows:
        print('  '.join(cell + ' ' * (width - len(cell)) for cell, width in zip(row, widths)))
    print()
    return outputs

#----------------------------------------------------------------------------
