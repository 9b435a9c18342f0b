"""Process-group setup for multi-process training (torchrun or spawn), gloo on CPU and nccl on GPU."""

import os
import sys
from typing import Any, Optional, Union

import torch

from . import training_stats

#----------------------------------------------------------------------------

def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, '')
    return int(value) if value.strip() else default

def init(rank: Optional[int] = None, world_size: Optional[int] = None, init_method: Optional[str] = None,
         device: Union[str, torch.device, None] = None, backend: Optional[str] = None,
         local_rank: Optional[int] = None) -> torch.device:
    """Join the process group and set up training_stats; returns the device this process should use.

    Arguments left as None come from the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
    MASTER_PORT); without them, a single process (rank 0 of 1) is assumed and no process group is created.
    For torch.multiprocessing.spawn, pass rank, world_size and init_method (e.g. 'file:///tmp/initfile').
    An explicit init_method creates the group even for one process (torchrun with one rank: init_method='env://').

    Args:
        device:     'cpu', 'cuda' or a torch.device. None = CUDA (device local_rank) if available, else CPU.
        backend:    None = 'nccl' for CUDA devices, 'gloo' otherwise.
        local_rank: Index of this process on its machine; None = LOCAL_RANK, else rank. Spawned ranks pass it so
                    that a LOCAL_RANK left in the parent's environment cannot put them all on one GPU.
    """
    rank = _env_int('RANK', 0) if rank is None else rank
    world_size = _env_int('WORLD_SIZE', 1) if world_size is None else world_size
    local_rank = _env_int('LOCAL_RANK', rank) if local_rank is None else local_rank
    if not 0 <= rank < world_size:
        raise ValueError(f'distributed.init(): invalid rank {rank} for world size {world_size}')

    if device is None:
        device = torch.device('cuda', local_rank % max(torch.cuda.device_count(), 1)) if torch.cuda.is_available() \
            else torch.device('cpu')
    device = torch.device(device)
    if device.type == 'cuda':
        if device.index is None:
            device = torch.device('cuda', local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)

    if (world_size > 1 or init_method is not None) and not torch.distributed.is_initialized():
        if backend is None:
            backend = 'nccl' if device.type == 'cuda' else 'gloo'
        if init_method is None and 'MASTER_ADDR' not in os.environ:
            raise ValueError('distributed.init(): world_size > 1 needs init_method or the torchrun environment '
                             '(MASTER_ADDR/MASTER_PORT)')
        if init_method is None:
            init_method = 'env://'
        if sys.platform == 'win32' and backend == 'nccl':
            raise ValueError('distributed.init(): nccl is not available on Windows; use backend="gloo"')
        torch.distributed.init_process_group(backend=backend, init_method=init_method, rank=rank,
                                             world_size=world_size)

    # training_stats needs a device the backend can all_reduce on: CUDA for nccl, CPU for gloo.
    training_stats.init_multiprocessing(rank=rank, sync_device=device if world_size > 1 else None)
    return device

def cleanup() -> None:
    """Leave the process group (if any)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()

#----------------------------------------------------------------------------

def is_initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()

def get_rank() -> int:
    return torch.distributed.get_rank() if is_initialized() else 0

def get_world_size() -> int:
    return torch.distributed.get_world_size() if is_initialized() else 1

def barrier() -> None:
    if is_initialized():
        torch.distributed.barrier()

def print0(*args: Any, **kwargs: Any) -> None:
    """print() on rank 0 only."""
    if get_rank() == 0:
        print(*args, **kwargs)

#----------------------------------------------------------------------------
