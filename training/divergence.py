"""Divergence guard: cheap on-device health flags per step, one verdict per tick, rollback bookkeeping."""

import math
import os
import time
from typing import List, Optional, Tuple

import numpy as np
import torch

import dnnlib
from training import checkpoint

#----------------------------------------------------------------------------

class TrainingDiverged(RuntimeError):
    """Raised when the guard gives up (retries exhausted, or nothing to roll back to)."""

#----------------------------------------------------------------------------

class DivergenceGuard:
    """Watches one training run. The loop calls observe_grads() per optimizer step (no host sync), check() once
    per tick (one small sync), and rollback() when check() returns a verdict.

    Triggers (any one):
      * non-finite parameters/buffers of G, D or G_ema, or a non-finite G/D loss mean over the tick;
      * gradient explosion: the tick's largest gradient norm is non-finite, above `grad_limit`, or more than
        `spike_factor` times the median of the previous ticks' maxima (after `spike_warmup` ticks);
      * D dominates: for `collapse_ticks` consecutive ticks D classifies real and fake images by sign with accuracy
        >= `collapse_acc`, while the G loss rose over that streak. The rollback then goes to a checkpoint from before
        the streak began.
    On rollback the RNG is reseeded (an exact replay would diverge again) and, optionally, learning rates are
    multiplied by `lr_factor` and R1 gamma by `gamma_factor` (cumulative over rollbacks, saved in checkpoints).
    After `retries` consecutive rollbacks without getting past the failing tick, TrainingDiverged is raised.
    """

    def __init__(self, device: torch.device, num_gpus: int = 1, retries: int = 3, grad_limit: Optional[float] = None,
                 spike_factor: float = 1e3, spike_warmup: int = 5, collapse_ticks: int = 20, collapse_acc: float = 0.99,
                 lr_factor: float = 1.0, gamma_factor: float = 1.0):
        self.device, self.num_gpus = torch.device(device), num_gpus
        self.retries, self.grad_limit, self.spike_factor, self.spike_warmup = retries, grad_limit, spike_factor, spike_warmup
        self.collapse_ticks, self.collapse_acc = collapse_ticks, collapse_acc
        self.lr_factor, self.gamma_factor = lr_factor, gamma_factor
        self._bad_steps = torch.zeros([], dtype=torch.float32, device=self.device)
        self._max_norm = torch.zeros([], dtype=torch.float32, device=self.device)
        self.norm_history: List[float] = []
        self.streak, self.streak_g_loss = 0, None
        self.rollbacks = 0           # consecutive, reset once training gets past the tick that failed
        self.total_rollbacks = 0
        self.failed_tick = None
        self.lr_scale, self.gamma_scale = 1.0, 1.0

    #------------------------------------------------------------------------

    def observe_grads(self, flat_grad: torch.Tensor) -> None:
        """Per optimizer step, on the all-reduced flat gradient before NaN/Inf are replaced; stays on the device."""
        norm = flat_grad.detach().float().norm()
        self._bad_steps += ~torch.isfinite(norm)
        self._max_norm = torch.maximum(self._max_norm, torch.nan_to_num(norm, nan=float('inf')))

    def check(self, cur_tick: int, stats: dict, modules: List[torch.nn.Module]) -> Optional[Tuple[str, Optional[int]]]:
        """Once per tick (collective).
        stats: name -> (num, mean) over the tick (training_stats.Collector).
        Returns None, or (reason, rollback to a checkpoint with ticks_done <= this; None = the latest)."""
        with torch.no_grad():
            finite = torch.stack([torch.isfinite(t).all() for m in modules for t in list(m.parameters()) + list(m.buffers())
                                  if t.is_floating_point() and t.numel() > 0]).all()
            flags = torch.stack([self._bad_steps, self._max_norm, (~finite).float()])
            if self.num_gpus > 1:
                torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            bad_steps, max_norm, bad_params = [float(x) for x in flags.cpu()]  # the one host sync per tick
        self._bad_steps.zero_()
        self._max_norm.zero_()

        if bad_params:
            return 'non-finite parameters or buffers in G/D/G_ema', None
        for name in ('Loss/G/loss', 'Loss/D/loss'):
            num, v = stats.get(name, (0, float('nan')))
            if num > 0 and not math.isfinite(v):
                return f'non-finite loss ({name} = {v})', None
        if bad_steps > 0 or not math.isfinite(max_norm):
            return f'non-finite gradients in {int(bad_steps)} optimizer step(s)', None
        if self.grad_limit is not None and max_norm > self.grad_limit:
            return f'gradient norm {max_norm:.3g} above --guard-grad-limit={self.grad_limit:g}', None
        if len(self.norm_history) >= self.spike_warmup:
            median = float(np.median(self.norm_history[-50:]))
            if median > 0 and max_norm > self.spike_factor * median:
                return f'gradient norm spike {max_norm:.3g} (> {self.spike_factor:g} x recent median {median:.3g})', None
        self.norm_history = (self.norm_history + [max_norm])[-50:]

        if self.collapse_ticks > 0:
            signs_real, signs_fake, g_loss = (stats.get(k, (0, float('nan')))[1] for k in ('Loss/signs/real', 'Loss/signs/fake', 'Loss/G/loss'))
            acc_real, acc_fake = (1 + signs_real) / 2, (1 - signs_fake) / 2
            if acc_real >= self.collapse_acc and acc_fake >= self.collapse_acc:
                if self.streak == 0:
                    self.streak_g_loss = g_loss
                self.streak += 1
                if self.streak >= self.collapse_ticks and g_loss > self.streak_g_loss:
                    onset = cur_tick - self.streak + 1  # first tick of the streak; its checkpoint has ticks_done <= onset
                    return (f'D dominates: real/fake sign accuracy >= {self.collapse_acc:g} for {self.streak} ticks while '
                            f'the G loss rose {self.streak_g_loss:.3g} -> {g_loss:.3g}'), onset
            else:
                self.streak, self.streak_g_loss = 0, None
        return None

    #------------------------------------------------------------------------

    def rollback(self, reason: str, cur_tick: int) -> str:
        """Count a rollback and update the adjustments; raises TrainingDiverged when retries are exhausted."""
        self.rollbacks += 1
        self.total_rollbacks += 1
        self.failed_tick = cur_tick if self.failed_tick is None else max(self.failed_tick, cur_tick)
        if self.rollbacks > self.retries:
            raise TrainingDiverged(f'training diverged ({reason}) at tick {cur_tick} and {self.retries} rollback(s) did '
                                   f'not help; giving up (try a larger --gamma, lower --glr/--dlr, or --guard-lr-factor/'
                                   f'--guard-gamma-factor)')
        self.lr_scale *= self.lr_factor
        self.gamma_scale *= self.gamma_factor
        self.streak, self.streak_g_loss = 0, None
        adj = []
        if self.lr_factor != 1:
            adj.append(f'learning rates x{self.lr_scale:g}')
        if self.gamma_factor != 1:
            adj.append(f'R1 gamma x{self.gamma_scale:g}')
        return f'attempt {self.rollbacks}/{self.retries}, new random seed' + ''.join(', ' + a for a in adj)

    def passed(self, ticks_done: int) -> None:
        """A checkpoint was written after ticks_done ticks: past the failing tick means the rollback worked."""
        if self.failed_tick is not None and ticks_done > self.failed_tick:
            self.rollbacks, self.failed_tick = 0, None

    def apply(self, base_lrs: dict, optimizers: dict, loss, base_gamma: Optional[float]) -> None:
        """Set optimizer lrs and loss.r1_gamma from their configured values and the accumulated scales."""
        for name, opt in optimizers.items():
            for group, lr in zip(opt.param_groups, base_lrs[name]):
                group['lr'] = lr * self.lr_scale
        if base_gamma is not None and hasattr(loss, 'r1_gamma'):
            loss.r1_gamma = base_gamma * self.gamma_scale

    def state_dict(self) -> dict:
        return dict(rollbacks=self.rollbacks, total_rollbacks=self.total_rollbacks, failed_tick=self.failed_tick,
                    lr_scale=self.lr_scale, gamma_scale=self.gamma_scale, norm_history=list(self.norm_history),
                    streak=self.streak, streak_g_loss=self.streak_g_loss)

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)

#----------------------------------------------------------------------------

def _reset_training_stats(collectors: list) -> None:
    """Zero the cumulative training_stats counters: one NaN report would otherwise make every later delta NaN."""
    from torch_utils import training_stats
    training_stats.reset()
    for collector in collectors:
        if collector is not None:
            collector.reset()

def rollback_to_checkpoint(verdict, *, cur_nimg, cur_tick, guard, run_dir, rank, num_gpus, device, random_seed, restore_kwargs,
              samplers, base_lrs, base_gamma, stats_jsonl, collectors):
    """Restore the last good checkpoint after a guard verdict; returns the restored (cur_nimg, cur_tick, batch_idx)."""
    reason, max_ticks = verdict
    log = print if rank == 0 else None
    how = guard.rollback(reason, cur_tick)  # raises TrainingDiverged when out of retries
    found = checkpoint.find_latest_good(run_dir, max_ticks=max_ticks, log=log)
    if found is None:
        raise TrainingDiverged(f'training diverged ({reason}) at tick {cur_tick}, and there is no checkpoint to roll back '
                               f'to (checkpoints are written every --ckpt ticks, the first one after tick 0)')
    path, state = found
    _reset_training_stats(collectors)  # before restore(), which re-adds ADA's pending statistics
    checkpoint.restore(state, **dict(restore_kwargs, samplers=samplers))
    guard.apply(base_lrs, restore_kwargs['optimizers'], restore_kwargs['loss'], base_gamma)
    checkpoint.reseed(random_seed * num_gpus + rank + 1000003 * guard.total_rollbacks, device)
    if num_gpus > 1:
        torch.distributed.barrier()  # every rank has read the checkpoint before rank 0 removes newer ones
    if rank == 0:
        msg = (f'Divergence guard: {reason} at tick {cur_tick} (kimg {cur_nimg / 1e3:.3f}); rolled back to '
               f'{os.path.basename(path)} (kimg {state["cur_nimg"] / 1e3:.3f}), {how}')
        print(msg)
        checkpoint.discard_newer(run_dir, state['cur_tick'])
        checkpoint.truncate_jsonl_files(run_dir, state['jsonl_lines'])
        one = lambda v: dict(num=1, mean=float(v), std=0.0)
        dnnlib.util.append_jsonl(stats_jsonl, {'Guard/rollback': one(guard.total_rollbacks), 'Guard/failed_tick': one(cur_tick),
                                              'Guard/failed_kimg': one(cur_nimg / 1e3), 'Progress/tick': one(state['cur_tick'] - 1),
                                              'Progress/kimg': one(state['cur_nimg'] / 1e3), 'Guard/lr_scale': one(guard.lr_scale),
                                              'Guard/gamma_scale': one(guard.gamma_scale),
                                              'timestamp': time.time()})
    return state['cur_nimg'], state['cur_tick'], state['batch_idx']

#----------------------------------------------------------------------------
