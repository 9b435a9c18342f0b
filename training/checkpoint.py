"""Training-state checkpoints for exact resume: capture/restore, atomic save, weights-only load, latest-good search."""

import json
import os
import random
import re
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

import dnnlib

FORMAT = 'eg3d-training-state'
VERSION = 1
_NAME_RE = re.compile(r'checkpoint-(\d+)-tick(\d+)\.pt')
_TEMP_RE = re.compile(r'\..+\.[A-Za-z0-9_]{6,}\.tmp')     # dnnlib.util.atomic_write temp files: .<name>.<random>.tmp
_REQUIRED = ('format', 'version', 'cur_nimg', 'cur_tick', 'batch_idx', 'num_gpus', 'G', 'D', 'G_ema', 'optimizers',
             'rng', 'sampler', 'jsonl_lines')

# Keys of training_options.json that may change when a run is continued (everything else must match).
VOLATILE_KEYS = ('run_dir', 'total_kimg', 'metrics', 'image_snapshot_ticks', 'network_snapshot_ticks', 'data_loader_kwargs',
                 'cudnn_benchmark', 'batch_gpu', 'resume_state', 'checkpoint_ticks', 'keep_checkpoints', 'guard_kwargs',
                 'write_safetensors', 'detector_dir', 'torch_compile', 'amp')

#----------------------------------------------------------------------------
# Names, listing, test hook.

def checkpoint_name(cur_nimg: int, ticks_done: int) -> str:
    """File name of the checkpoint written after `ticks_done` ticks at `cur_nimg` images."""
    return f'checkpoint-{cur_nimg // 1000:06d}-tick{ticks_done:06d}.pt'

def list_checkpoints(run_dir: str) -> List[Tuple[int, str]]:
    """[(ticks_done, path)] of the checkpoints in run_dir, oldest first."""
    found = []
    for name in (os.listdir(run_dir) if os.path.isdir(run_dir) else []):
        m = _NAME_RE.fullmatch(name)
        if m:
            found.append((int(m.group(2)), os.path.join(run_dir, name)))
    return sorted(found)

def test_write_hook(path: str) -> None:
    """Tests only: EG3D_TEST_WRITE_DELAY=<seconds> sleeps inside atomic_write (temp file written, not yet renamed)."""
    delay = os.environ.get('EG3D_TEST_WRITE_DELAY')
    if delay:
        print(f'[test hook] writing {os.path.basename(path)}', flush=True)
        time.sleep(float(delay))

#----------------------------------------------------------------------------
# RNG and sampler states as plain tensors/lists, so that checkpoints load with torch.load(weights_only=True).

def _np_state_to_safe(state: tuple) -> dict:
    return dict(keys=torch.from_numpy(np.asarray(state[1], dtype=np.int64)), pos=int(state[2]), has_gauss=int(state[3]),
                cached_gaussian=float(state[4]))

def _np_state_from_safe(d: dict) -> tuple:
    return ('MT19937', d['keys'].numpy().astype(np.uint32), int(d['pos']), int(d['has_gauss']), float(d['cached_gaussian']))

def capture_rng(device: torch.device) -> dict:
    """Every RNG state the loop draws from (torch CPU/CUDA, numpy, python), in a torch.load-safe form."""
    py = random.getstate()
    return dict(torch=torch.get_rng_state(), numpy=_np_state_to_safe(np.random.get_state()),
                python=dict(version=py[0], state=list(py[1]), gauss_next=py[2]),
                cuda=torch.cuda.get_rng_state(device) if device.type == 'cuda' else None)

def restore_rng(state: dict, device: torch.device) -> None:
    """Inverse of capture_rng()."""
    torch.set_rng_state(state['torch'])
    np.random.set_state(_np_state_from_safe(state['numpy']))
    py = state['python']
    random.setstate((py['version'], tuple(py['state']), py['gauss_next']))
    if device.type == 'cuda' and state.get('cuda') is not None:
        torch.cuda.set_rng_state(state['cuda'], device)

def reseed(seed: int, device: torch.device) -> None:
    """Fresh RNG streams (divergence rollback: replaying the exact same randomness would diverge the same way)."""
    seed = int(seed) % 2**32
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)

def sampler_state_to_safe(sd: dict) -> dict:
    """InfiniteSampler.state_dict() with numpy arrays/states turned into tensors and lists (weights_only load)."""
    out = dict(sd, order=torch.from_numpy(np.asarray(sd['order'], dtype=np.int64)))
    out['rnd_state'] = _np_state_to_safe(sd['rnd_state']) if sd['rnd_state'] is not None else None
    return out

def sampler_state_from_safe(d: dict) -> dict:
    """Inverse of sampler_state_to_safe()."""
    out = dict(d, order=d['order'].numpy())
    out['rnd_state'] = _np_state_from_safe(d['rnd_state']) if d['rnd_state'] is not None else None
    return out

#----------------------------------------------------------------------------
# Capture / restore of the loop's objects.

def _plain(obj: Any) -> Any:
    """EasyDicts/tuples -> dicts/lists (weights_only loading accepts only plain containers)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj

def module_attrs(module: torch.nn.Module) -> dict:
    """Plain attributes outside the state dict that training changes (EG3D: render resolution, rendering kwargs)."""
    return {k: _plain(getattr(module, k)) for k in ('neural_rendering_resolution', 'rendering_kwargs') if hasattr(module, k)}

def loss_state(loss: Any) -> dict:
    """The loss object's schedule state: its state_dict() if it has one, else its tensor attributes."""
    if hasattr(loss, 'state_dict'):
        return dict(loss.state_dict())
    return {k: v.detach().cpu().clone() for k, v in vars(loss).items() if isinstance(v, torch.Tensor)}

def restore_loss(loss: Any, state: dict) -> None:
    """Inverse of loss_state()."""
    if hasattr(loss, 'load_state_dict'):
        loss.load_state_dict(state)
        return
    for k, v in state.items():
        cur = getattr(loss, k, None)
        if isinstance(cur, torch.Tensor):
            cur.copy_(v.to(cur.device))

def _ada_pending(ada_stats: Any) -> Optional[torch.Tensor]:
    """ADA moments reported since ADA's last adjustment (valid right after a full stats update, as at tick ends)."""
    return ada_stats.pending('Loss/signs/real') if ada_stats is not None else None

def _restore_ada_pending(ada_stats: Any, pending: Optional[torch.Tensor]) -> None:
    if ada_stats is None or pending is None:
        return
    ada_stats.set_pending('Loss/signs/real', pending)  # next update() sees pending + whatever is reported from now on

def count_jsonl_lines(run_dir: str) -> Dict[str, int]:
    """{file name: complete lines} of every *.jsonl in run_dir (recorded in checkpoints for exact resume)."""
    counts = {}
    for name in sorted(os.listdir(run_dir)):
        if name.endswith('.jsonl'):
            with open(os.path.join(run_dir, name), 'rb') as f:
                counts[name] = f.read().count(b'\n')
    return counts

def capture(*, cur_nimg: int, cur_tick: int, batch_idx: int, num_gpus: int, rank: int, device: torch.device,
            G, D, G_ema, augment_pipe, optimizers: Dict[str, torch.optim.Optimizer], loss, ada_stats, guard,
            sampler, run_dir: str) -> Optional[dict]:
    """The complete training state (collective over ranks: per-rank RNG and sampler states are gathered to rank 0)."""
    per_rank = dict(rng=capture_rng(device), sampler=sampler_state_to_safe(sampler.state_dict()))
    if num_gpus > 1:
        gathered = [None] * num_gpus
        torch.distributed.all_gather_object(gathered, per_rank)
    else:
        gathered = [per_rank]
    if rank != 0:
        return None
    sd = lambda m: {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
    return dict(format=FORMAT, version=VERSION, cur_nimg=int(cur_nimg), cur_tick=int(cur_tick), batch_idx=int(batch_idx),
                num_gpus=int(num_gpus), timestamp=time.time(),
                G=sd(G), D=sd(D), G_ema=sd(G_ema), G_attrs=module_attrs(G), G_ema_attrs=module_attrs(G_ema),
                augment_pipe=sd(augment_pipe) if augment_pipe is not None else None,
                optimizers={k: opt.state_dict() for k, opt in optimizers.items()},
                loss=loss_state(loss), ada_pending=_ada_pending(ada_stats),
                guard=guard.state_dict() if guard is not None else None,
                rng=[g['rng'] for g in gathered], sampler=[g['sampler'] for g in gathered],
                jsonl_lines=count_jsonl_lines(run_dir))

def restore(state: dict, *, rank: int, G, D, G_ema, augment_pipe, optimizers, loss, ada_stats, samplers) -> None:
    """Load everything but RNG and counters into freshly built objects (same config as the saved run)."""
    for name, module in [('G', G), ('D', D), ('G_ema', G_ema)]:
        module.load_state_dict(state[name], strict=True)
        for k, v in state.get(name + '_attrs', {}).items():
            setattr(module, k, v)
    if (augment_pipe is None) != (state.get('augment_pipe') is None):
        raise ValueError('checkpoint and current config disagree on the augmentation pipeline')
    if augment_pipe is not None:
        augment_pipe.load_state_dict(state['augment_pipe'], strict=True)
    if set(optimizers) != set(state['optimizers']):
        raise ValueError(f'checkpoint optimizers {sorted(state["optimizers"])} != current {sorted(optimizers)}')
    for k, opt in optimizers.items():
        opt.load_state_dict(state['optimizers'][k])
    restore_loss(loss, state.get('loss') or {})
    _restore_ada_pending(ada_stats, state.get('ada_pending'))
    for sampler in samplers:
        sampler.load_state_dict(sampler_state_from_safe(state['sampler'][rank]))

#----------------------------------------------------------------------------
# Files.

def save(state: dict, path: str) -> None:
    """Write a checkpoint atomically (temp file, fsync, rename)."""
    with dnnlib.util.atomic_write(path, 'wb') as f:
        torch.save(state, f)
        test_write_hook(path)

def load(path: str) -> dict:
    """Load and validate a checkpoint without unpickling code (torch weights_only); IOError if unusable."""
    try:
        with open(path, 'rb') as f:
            state = torch.load(f, map_location='cpu', weights_only=True)
    except Exception as err:  # truncated zip, bad magic, foreign pickle, ...: all mean "unusable"
        raise IOError(f'{path}: unreadable training checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ""})') from err
    if not isinstance(state, dict) or state.get('format') != FORMAT:
        raise IOError(f'{path}: not a training checkpoint of this codebase')
    if state.get('version') != VERSION:
        raise IOError(f'{path}: checkpoint version {state.get("version")} is not supported (expected {VERSION})')
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise IOError(f'{path}: checkpoint lacks {", ".join(missing)}')
    return state

def find_latest_good(run_dir: str, max_ticks: Optional[int] = None, log: Optional[Callable] = print) -> Optional[Tuple[str, dict]]:
    """Newest loadable checkpoint (with ticks_done <= max_ticks); corrupt ones are skipped with a warning.
    None if the directory holds no checkpoint at all; IOError if it holds some but none is usable."""
    found = [(t, p) for t, p in list_checkpoints(run_dir) if max_ticks is None or t <= max_ticks]
    if not found and max_ticks is not None and list_checkpoints(run_dir):
        found = list_checkpoints(run_dir)[:1]  # nothing that old is kept: take the oldest one
    for _ticks, path in reversed(found):
        try:
            return path, load(path)
        except IOError as err:
            if log is not None:
                log(f'Warning: skipping checkpoint: {err}')
    if found:
        raise IOError(f'{run_dir}: none of the {len(found)} training checkpoints is readable')
    return None

def load_for_resume(resume_state: str, num_gpus: int, log: Optional[Callable] = print) -> Tuple[Optional[str], Optional[dict]]:
    """resume_state = a checkpoint file or a run dir -> (path, state), or (None, None) for a run dir without checkpoints."""
    if os.path.isdir(resume_state):
        found = find_latest_good(resume_state, log=log)
        path, state = found if found is not None else (None, None)
    else:
        path, state = resume_state, load(resume_state)
    if state is not None and state['num_gpus'] != num_gpus:
        raise ValueError(f'{path}: saved with --gpus={state["num_gpus"]}; exact resume needs the same number of '
                         f'processes (use --resume=<network-snapshot.pkl> to continue from weights only)')
    return path, state

def prune(run_dir: str, keep: int) -> None:
    """Keep the newest `keep` checkpoints (keep <= 0: keep all)."""
    if keep > 0:
        for _ticks, path in list_checkpoints(run_dir)[:-keep]:
            os.remove(path)

def discard_newer(run_dir: str, ticks_done: int, rename: bool = False) -> List[str]:
    """Remove (or set aside as *.abandoned) checkpoints newer than ticks_done: they belong to an abandoned branch."""
    gone = []
    for ticks, path in list_checkpoints(run_dir):
        if ticks > ticks_done:
            os.replace(path, path + '.abandoned') if rename else os.remove(path)
            gone.append(path)
    return gone

def cleanup_temp_files(run_dir: str) -> List[str]:
    """Delete temp files that a killed process left behind in atomic_write (never under a final name)."""
    removed = []
    for name in os.listdir(run_dir):
        if _TEMP_RE.fullmatch(name):
            os.remove(os.path.join(run_dir, name))
            removed.append(name)
    return removed

#----------------------------------------------------------------------------
# JSONL logs: appended through an atomic rewrite, cut back to the checkpoint on resume/rollback.

def truncate_jsonl_files(run_dir: str, lines: Dict[str, int]) -> None:
    """Cut every *.jsonl in run_dir to the number of lines recorded in the checkpoint (0 if not recorded)."""
    for name in sorted(os.listdir(run_dir)):
        if not name.endswith('.jsonl'):
            continue
        path = os.path.join(run_dir, name)
        with open(path, 'rb') as f:
            data = f.read()
        keep = int(lines.get(name, 0))
        parts = data.split(b'\n')
        new = b''.join(p + b'\n' for p in parts[:min(keep, len(parts) - 1)])
        if new != data:
            with dnnlib.util.atomic_write(path, 'wb') as f:
                f.write(new)

#----------------------------------------------------------------------------
# Picking what to resume (train.py).

def _canon(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))

def config_diff(stored: dict, current: dict) -> List[str]:
    """Keys (dotted, one level deep) whose values differ, ignoring VOLATILE_KEYS."""
    a, b = _canon(stored), _canon(current)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in VOLATILE_KEYS or a.get(key) == b.get(key):
            continue
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            diffs += [f'{key}.{k}' for k in sorted(set(va) | set(vb)) if va.get(k) != vb.get(k)]
        else:
            diffs.append(key)
    return diffs

def read_options(run_dir: str) -> Optional[dict]:
    """The run's training_options.json, or None if it is missing or unreadable."""
    try:
        with open(os.path.join(run_dir, 'training_options.json'), 'rt') as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def find_matching_run(outdir: str, config: dict) -> Optional[str]:
    """Latest run dir (highest leading number) in outdir whose training_options.json matches config."""
    if not os.path.isdir(outdir):
        return None
    runs = []
    for name in os.listdir(outdir):
        m = re.match(r'^\d+', name)
        if m and os.path.isdir(os.path.join(outdir, name)):
            runs.append((int(m.group()), name))
    for _num, name in sorted(runs, reverse=True):
        stored = read_options(os.path.join(outdir, name))
        if stored is not None and not config_diff(stored, config):
            return os.path.join(outdir, name)
    return None

def classify_resume(resume: str) -> str:
    """'auto' | 'pkl' (EG3D weights-only: .pkl/.safetensors/URL) | 'run_dir' | 'checkpoint'; ValueError otherwise."""
    if resume == 'auto':
        return 'auto'
    if dnnlib.util.is_url(resume) or resume.endswith(('.pkl', '.safetensors')):
        return 'pkl'
    if os.path.isdir(resume):
        return 'run_dir'
    if os.path.isfile(resume) and resume.endswith('.pt'):
        return 'checkpoint'
    raise ValueError(f'--resume={resume}: not a network pickle/.safetensors, run directory, training checkpoint '
                     f'(checkpoint-*.pt) or "auto"' + ('' if os.path.exists(resume) else ' (no such file or directory)'))

#----------------------------------------------------------------------------
