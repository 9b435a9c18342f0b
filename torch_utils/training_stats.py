"""Cheap collection of scalar statistics (count, mean, std) across devices and processes during training.

Code anywhere in the training step calls `report(name, value)`; the training loop periodically calls
`Collector.update()`, which sums the moments over all devices and ranks, and reads the averages.
"""

import re
from typing import Any, List, Optional, Tuple

import numpy as np
import torch

import dnnlib
from . import misc

#----------------------------------------------------------------------------

_num_moments = 3             # [num_scalars, sum_of_scalars, sum_of_squares]
_reduce_dtype = torch.float32 # Data type to use for initial per-tensor reduction.
_counter_dtype = torch.float64 # Data type to use for the internal counters.
_rank = 0                    # Rank of the current process.
_sync_device = None          # Device to use for multiprocess communication. None = single-process.
_sync_called = False         # Has _sync() been called yet?
_counters = dict()           # Running counters on each device, updated by report(): name => device => torch.Tensor
_cumulative = dict()         # Cumulative counters on the CPU, updated by _sync(): name => torch.Tensor

#----------------------------------------------------------------------------

def init_multiprocessing(rank: int, sync_device: Optional[torch.device]) -> None:
    """Set up cross-process reduction. Call once per process before the first Collector.update().

    Args:
        rank:        Rank of the current process.
        sync_device: Device for the all_reduce (e.g. torch.device('cuda', rank); a CPU device with gloo),
                     or None to disable multi-process reduction.
    """
    global _rank, _sync_device
    if _sync_called:
        raise RuntimeError('training_stats.init_multiprocessing() must be called before the first Collector.update()')
    _rank = rank
    _sync_device = sync_device

#----------------------------------------------------------------------------

@misc.profiled_function
def report(name: str, value: Any) -> Any:
    """Accumulate the elements of `value` (scalar, list, array or tensor) under `name`; returns `value`.

    An empty value only registers the name. Every process must report the same names in the same order
    (use an empty value where a process has nothing to say), because Collector.update() reduces by position.
    """
    if name not in _counters:
        _counters[name] = dict()

    elems = torch.as_tensor(value)
    if elems.numel() == 0:
        return value

    elems = elems.detach().flatten().to(_reduce_dtype)
    moments = torch.stack([
        torch.ones_like(elems).sum(),
        elems.sum(),
        elems.square().sum(),
    ])
    assert moments.ndim == 1 and moments.shape[0] == _num_moments
    moments = moments.to(_counter_dtype)

    device = moments.device
    if device not in _counters[name]:
        _counters[name][device] = torch.zeros_like(moments)
    _counters[name][device].add_(moments)
    return value

def report0(name: str, value: Any) -> Any:
    """Like report(), but only rank 0's values count (other ranks register the name with no data)."""
    report(name, value if _rank == 0 else [])
    return value

#----------------------------------------------------------------------------

class Collector:
    """Reads the statistics reported since the previous update(), for the names matching `regex` (full match).

    Args:
        regex:         Regular expression defining which statistics to collect.
        keep_previous: Whether to keep the previous averages of statistics that received no new data.
    """

    def __init__(self, regex: str = '.*', keep_previous: bool = True):
        self._regex = re.compile(regex)
        self._keep_previous = keep_previous
        self._cumulative = dict()
        self._moments = dict()
        self.update()
        self._moments.clear() # only data reported after construction counts

    def names(self) -> List[str]:
        """Names of all statistics reported so far (in report order) that match the regex."""
        return [name for name in _counters if self._regex.fullmatch(name)]

    def update(self) -> None:
        """Gather the data reported since the previous call, across devices and processes. Collective call."""
        if not self._keep_previous:
            self._moments.clear()
        for name, cumulative in _sync(self.names()):
            if name not in self._cumulative:
                self._cumulative[name] = torch.zeros([_num_moments], dtype=_counter_dtype)
            delta = cumulative - self._cumulative[name]
            self._cumulative[name].copy_(cumulative)
            if float(delta[0]) != 0:
                self._moments[name] = delta

    def reset(self) -> None:
        """Zero what this collector has seen, to follow training_stats.reset() (the next update() counts from zero)."""
        for cum in self._cumulative.values():
            cum.zero_()

    def pending(self, name: str) -> Optional[torch.Tensor]:
        """Moments of `name` already gathered (by any collector's update()) but not yet read by this collector;
        None if `name` was never gathered. Used to checkpoint ADA's partial interval."""
        total = _cumulative.get(name)
        if total is None:
            return None
        seen = self._cumulative.get(name)
        return (total - seen if seen is not None else total).clone()

    def set_pending(self, name: str, pending: torch.Tensor) -> None:
        """Make the next update() read `pending` (from pending()) plus whatever is reported from now on."""
        total = _cumulative.get(name, torch.zeros_like(pending))
        self._cumulative[name] = total - pending

    def _get_delta(self, name: str) -> torch.Tensor:
        assert self._regex.fullmatch(name), f'{name!r} does not match the collector regex'
        if name not in self._moments:
            self._moments[name] = torch.zeros([_num_moments], dtype=_counter_dtype)
        return self._moments[name]

    def num(self, name: str) -> int:
        """Number of scalars accumulated for `name` during the last interval."""
        return int(self._get_delta(name)[0])

    def mean(self, name: str) -> float:
        """Mean of the scalars, or NaN if there were none."""
        delta = self._get_delta(name)
        if int(delta[0]) == 0:
            return float('nan')
        return float(delta[1] / delta[0])

    def std(self, name: str) -> float:
        """Standard deviation of the scalars; 0 for a single scalar, NaN if none or non-finite."""
        delta = self._get_delta(name)
        if int(delta[0]) == 0 or not np.isfinite(float(delta[1])):
            return float('nan')
        if int(delta[0]) == 1:
            return float(0)
        mean = float(delta[1] / delta[0])
        raw_var = float(delta[2] / delta[0])
        return float(np.sqrt(max(raw_var - np.square(mean), 0)))

    def as_dict(self) -> dnnlib.EasyDict:
        """All statistics as EasyDict(name -> EasyDict(num, mean, std)), e.g. for a JSONL log line."""
        stats = dnnlib.EasyDict()
        for name in self.names():
            stats[name] = dnnlib.EasyDict(num=self.num(name), mean=self.mean(name), std=self.std(name))
        return stats

    def __getitem__(self, name: str) -> float:
        return self.mean(name)

#----------------------------------------------------------------------------

def _sync(names: List[str]) -> List[Tuple[str, torch.Tensor]]:
    """Sum the running counters over devices and processes into the cumulative CPU counters."""
    if len(names) == 0:
        return []
    global _sync_called
    _sync_called = True

    # Collect deltas within the current process, resetting the per-device counters.
    device = _sync_device if _sync_device is not None else torch.device('cpu')
    deltas = []
    for name in names:
        delta = torch.zeros([_num_moments], dtype=_counter_dtype, device=device)
        for counter in _counters[name].values():
            delta.add_(counter.to(device))
            counter.zero_()
        deltas.append(delta)
    deltas = torch.stack(deltas)

    # Sum deltas across processes (every rank passes the same names in the same order).
    if _sync_device is not None:
        torch.distributed.all_reduce(deltas)

    deltas = deltas.cpu()
    for idx, name in enumerate(names):
        if name not in _cumulative:
            _cumulative[name] = torch.zeros([_num_moments], dtype=_counter_dtype)
        _cumulative[name].add_(deltas[idx])
    return [(name, _cumulative[name]) for name in names]

#----------------------------------------------------------------------------

def reset(process: bool = False) -> None:
    """Zero the cumulative moments of every statistic, keeping the names and the process setup (divergence rollback:
    one NaN report would otherwise make every later delta NaN; call Collector.reset() on live collectors as well).
    With process=True, forget everything instead, as in a fresh process: names, unread per-device counters and the
    init_multiprocessing() setup (tests that simulate several runs in one process)."""
    global _rank, _sync_device, _sync_called
    for cum in _cumulative.values():
        cum.zero_()
    if process:
        _rank, _sync_device, _sync_called = 0, None, False
        _counters.clear()
        _cumulative.clear()

#----------------------------------------------------------------------------
