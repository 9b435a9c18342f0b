"""Start training processes for train.py: run dir and training_options.json, then one process per GPU/CPU rank
(spawned, or the ranks torchrun already started) that calls training_loop."""

import contextlib
import json
import os
import re
import tempfile
from typing import Iterator, List, Optional

import click

import dnnlib

#----------------------------------------------------------------------------
# Process entry points.

def subprocess_fn(rank: int, c: dnnlib.EasyDict, temp_dir: Optional[str], local_rank: Optional[int] = None) -> None:
    import torch
    from torch_utils import custom_ops, distributed
    from training import training_loop

    if rank == 0:
        dnnlib.util.Logger(file_name=os.path.join(c.run_dir, 'log.txt'), file_mode='a', should_flush=True)
    if not torch.cuda.is_available() and os.environ.get('EG3D_MALLOC_TUNE', '1') != '0':
        from torch_utils.ops import host_malloc
        host_malloc.tune() # CPU steps re-fault large activations otherwise (docs/performance.md); opt out: EG3D_MALLOC_TUNE=0

    # Spawned ranks meet through a file in temp_dir; torchrun ranks (temp_dir None) already joined in launch_training.
    spawned = temp_dir is not None and c.num_gpus > 1
    init_method = 'file://' + os.path.abspath(os.path.join(temp_dir, '.torch_distributed_init')) if spawned else None
    device = distributed.init(rank=rank, world_size=c.num_gpus, init_method=init_method,
                              local_rank=rank if local_rank is None else local_rank)
    if rank != 0:
        custom_ops.verbosity = 'none'
    training_loop.training_loop(rank=rank, device=device, **c)

@contextlib.contextmanager
def _diverged_as_click_error() -> Iterator[None]:
    """A run that the divergence guard gave up on ends with the guard's one-line message, not a traceback, whether
    it failed in this process or in a spawned rank."""
    import torch
    from training.divergence import TrainingDiverged
    try:
        yield
    except TrainingDiverged as err:
        raise click.ClickException(str(err))
    except torch.multiprocessing.ProcessRaisedException as err:
        last = str(err).strip().splitlines()[-1]
        if 'TrainingDiverged' in last:
            raise click.ClickException(last.split(': ', 1)[-1])
        raise

def missing_detector(metrics: List[str], detector_dir: Optional[str] = None) -> Optional[str]:
    """The metrics' own error for a detector they need that is neither on disk nor obtainable, else None. Looks
    (and downloads, where the metrics would) exactly as the first snapshot's metrics will, so that a missing file
    stops the run at launch instead of after the first tick. No metrics: nothing is checked or imported."""
    if not metrics:
        return None
    from metrics import metric_main, metric_utils
    try:
        metric_utils.prepare_detectors(metric_main.detector_urls(metrics), detector_dir, verbose=True)
    except dnnlib.util.MissingWeightsError as err:
        return str(err)
    return None

def _write_options(c: dnnlib.EasyDict) -> None:
    os.makedirs(c.run_dir, exist_ok=c.get('resume_state') is not None)
    with dnnlib.util.atomic_write(os.path.join(c.run_dir, 'training_options.json'), 'wt') as f:
        json.dump(c, f, indent=2)

def next_run_dir(outdir: str, desc: str) -> str:
    """<outdir>/<NNNNN>-<desc>, NNNNN one more than the largest leading number among existing subdirectories."""
    prev = [x for x in os.listdir(outdir) if os.path.isdir(os.path.join(outdir, x))] if os.path.isdir(outdir) else []
    ids = [int(m.group()) for m in (re.match(r'^\d+', x) for x in prev) if m is not None]
    return os.path.join(outdir, f'{max(ids, default=-1) + 1:05d}-{desc}')

def launch_training(c: dnnlib.EasyDict, desc: str, outdir: str, dry_run: bool, run_dir: Optional[str] = None) -> None:
    dnnlib.util.Logger(should_flush=True)
    torchrun = 'RANK' in os.environ and 'WORLD_SIZE' in os.environ and 'LOCAL_RANK' in os.environ
    rank = int(os.environ['RANK']) if torchrun else 0
    if torchrun and int(os.environ['WORLD_SIZE']) != c.num_gpus:
        raise click.ClickException(f'--gpus={c.num_gpus} does not match torchrun WORLD_SIZE={os.environ["WORLD_SIZE"]}')

    c.run_dir = run_dir or next_run_dir(outdir, desc)  # exact resume continues in the same run dir
    if rank == 0:
        print()
        print('Training options:')
        print(json.dumps(c, indent=2))
        print()
        print(f'Output directory:    {c.run_dir}')
        print(f'Number of GPUs:      {c.num_gpus}')
        print(f'Batch size:          {c.batch_size} images')
        print(f'Training duration:   {c.total_kimg} kimg')
        print(f'Dataset path:        {c.training_set_kwargs.path}')
        print(f'Dataset size:        {c.training_set_kwargs.max_size} images')
        print(f'Dataset resolution:  {c.training_set_kwargs.resolution}')
        print(f'Dataset labels:      {c.training_set_kwargs.use_labels}')
        print(f'Dataset x-flips:     {c.training_set_kwargs.xflip}')
        print()
    if dry_run:
        print('Dry run; exiting.')
        return

    if torchrun:  # One process per rank already exists: rank 0 checks, picks the run dir and shares both.
        import torch
        from torch_utils import distributed
        try:
            distributed.init(init_method='env://') # a group even for one rank: the broadcast below needs it
        except ValueError as err:
            raise click.ClickException(str(err))
        error = None
        if rank == 0:
            error = missing_detector(c.metrics, c.get('detector_dir'))
            if error is None:
                print('Creating output directory...')
                _write_options(c)
        shared = [c.run_dir, error]
        torch.distributed.broadcast_object_list(shared, src=0)
        c.run_dir, error = shared
        if error is not None:
            raise click.ClickException(error)
        with _diverged_as_click_error():
            subprocess_fn(rank=rank, c=c, temp_dir=None, local_rank=int(os.environ['LOCAL_RANK']))
        return

    error = missing_detector(c.metrics, c.get('detector_dir'))
    if error is not None:
        raise click.ClickException(error)
    print('Creating output directory...')
    _write_options(c)
    print('Launching processes...')
    import torch
    torch.multiprocessing.set_start_method('spawn', force=True)
    with tempfile.TemporaryDirectory() as temp_dir, _diverged_as_click_error():
        if c.num_gpus == 1:
            subprocess_fn(rank=0, c=c, temp_dir=temp_dir)
        else:
            torch.multiprocessing.spawn(fn=subprocess_fn, args=(c, temp_dir), nprocs=c.num_gpus)

#----------------------------------------------------------------------------
