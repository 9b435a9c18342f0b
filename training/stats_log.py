"""Training logs: the per-tick status line (also reported to training_stats), stats.jsonl and TensorBoard events."""

import os
import time
from typing import Any, Optional, Tuple

import psutil
import torch

import dnnlib
from torch_utils import training_stats
from training import checkpoint

#----------------------------------------------------------------------------

def open_logs(run_dir: str, resume_state: Optional[str], ckpt: Optional[dict]) -> Tuple[str, Any]:
    """Rank 0: (stats.jsonl path, SummaryWriter or None). A resumed run first drops log lines newer than ckpt."""
    stats_tfevents = None
    if resume_state is not None:  # continue the run's logs from the checkpoint: later lines were never "done"
        checkpoint.cleanup_temp_files(run_dir)
        checkpoint.truncate_jsonl_files(run_dir, ckpt['jsonl_lines'] if ckpt is not None else {})
    stats_jsonl = os.path.join(run_dir, 'stats.jsonl')
    if not os.path.isfile(stats_jsonl):
        with dnnlib.util.atomic_write(stats_jsonl, 'wb'):
            pass
    try:
        import torch.utils.tensorboard as tensorboard
        stats_tfevents = tensorboard.SummaryWriter(run_dir)
    except ImportError as err:
        print('Skipping tfevents export:', err)
    return stats_jsonl, stats_tfevents

#----------------------------------------------------------------------------

def report_status(*, cur_tick: int, cur_nimg: int, start_time: float, tick_start_time: float, tick_end_time: float,
                  tick_start_nimg: int, maintenance_time: float, device: torch.device, augment_pipe: Any) -> str:
    """The status line of a tick; every field is also reported (rank 0) as a training_stats statistic."""
    cpu_gb = psutil.Process(os.getpid()).memory_info().rss / 2**30
    gpu_gb = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == 'cuda' else 0.0
    reserved_gb = torch.cuda.max_memory_reserved(device) / 2**30 if device.type == 'cuda' else 0.0
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    fields = []
    fields += [f"tick {training_stats.report0('Progress/tick', cur_tick):<5d}"]
    fields += [f"kimg {training_stats.report0('Progress/kimg', cur_nimg / 1e3):<8.1f}"]
    fields += [f"time {dnnlib.util.format_time(training_stats.report0('Timing/total_sec', tick_end_time - start_time)):<12s}"]
    fields += [f"sec/tick {training_stats.report0('Timing/sec_per_tick', tick_end_time - tick_start_time):<7.1f}"]
    fields += [f"sec/kimg {training_stats.report0('Timing/sec_per_kimg', (tick_end_time - tick_start_time) / max(cur_nimg - tick_start_nimg, 1) * 1e3):<7.2f}"]
    fields += [f"maintenance {training_stats.report0('Timing/maintenance_sec', maintenance_time):<6.1f}"]
    fields += [f"cpumem {training_stats.report0('Resources/cpu_mem_gb', cpu_gb):<6.2f}"]
    fields += [f"gpumem {training_stats.report0('Resources/peak_gpu_mem_gb', gpu_gb):<6.2f}"]
    fields += [f"reserved {training_stats.report0('Resources/peak_gpu_mem_reserved_gb', reserved_gb):<6.2f}"]
    fields += [f"augment {training_stats.report0('Progress/augment', float(augment_pipe.p.cpu()) if augment_pipe is not None else 0):.3f}"]
    training_stats.report0('Timing/total_hours', (tick_end_time - start_time) / (60 * 60))
    training_stats.report0('Timing/total_days', (tick_end_time - start_time) / (24 * 60 * 60))
    return ' '.join(fields)

#----------------------------------------------------------------------------

def write_logs(stats_jsonl: Optional[str], stats_tfevents: Any, stats_dict: dict, stats_metrics: dict, *,
               cur_nimg: int, start_time: float) -> None:
    """Append one stats.jsonl line and the TensorBoard scalars of a tick (either sink may be None)."""
    timestamp = time.time()
    if stats_jsonl is not None:
        dnnlib.util.append_jsonl(stats_jsonl, dict(stats_dict, timestamp=timestamp))
    if stats_tfevents is not None:
        global_step = int(cur_nimg / 1e3)
        walltime = timestamp - start_time
        for name, value in stats_dict.items():
            stats_tfevents.add_scalar(name, value.mean, global_step=global_step, walltime=walltime)
        for name, value in stats_metrics.items():
            stats_tfevents.add_scalar(f'Metrics/{name}', value, global_step=global_step, walltime=walltime)
        stats_tfevents.flush()

#----------------------------------------------------------------------------
