"""Main training loop (EG3D semantics): phases with lazy regularisation, EMA, ADA, logging, snapshots, metrics."""

import contextlib
import copy
import os
import random
import time

from typing import Dict

import numpy as np
import torch

import dnnlib
import legacy
from torch_utils import misc
from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import grid_sample_gradfix
from training import checkpoint
from training import snapshots
from training import stats_log
from training.phases import run_phase, setup_phases
from training.snapshots import save_image_grid, setup_snapshot_image_grid  # noqa: F401 -- also EG3D training_loop names
from training.divergence import DivergenceGuard, TrainingDiverged, rollback_to_checkpoint

#----------------------------------------------------------------------------

def _split_batch(batch, device, batch_gpu):
    """Dataset batch (img, c[, extras]) -> per-chunk lists; images become float in [-1, 1]."""
    img, c = batch[0], batch[1]
    extras = batch[2] if len(batch) > 2 else {}
    # non_blocking: a blocking host-to-device copy waits for all queued device work.
    img = (img.to(device, non_blocking=True).to(torch.float32) / 127.5 - 1).split(batch_gpu)
    c = c.to(device, non_blocking=True).split(batch_gpu)
    chunks = [{} for _ in img]
    for k, v in extras.items():
        for chunk, part in zip(chunks, torch.as_tensor(v).to(device, non_blocking=True).split(batch_gpu)):
            chunk[k] = part
    return img, c, chunks

def _sync_copy_attrs(G, G_ema):
    """State that lives outside parameters/buffers but must follow G (EG3D: neural rendering resolution, rendering kwargs)."""
    if hasattr(G, 'neural_rendering_resolution'):
        G_ema.neural_rendering_resolution = G.neural_rendering_resolution
    if hasattr(G, 'rendering_kwargs'):
        G_ema.rendering_kwargs = copy.copy(G.rendering_kwargs)

class PhaseTimer:
    """Run time of each phase over a tick. On CUDA every run records an event pair that is read only at the tick,
    where the loop waits for the device anyway, so the hot loop never syncs; on CPU the host clock suffices."""

    def __init__(self, device: torch.device):
        self.on_cuda = device.type == 'cuda'
        self.runs = dict()  # phase name -> [seconds] (CPU) or [(start, end) events] (CUDA)

    @contextlib.contextmanager
    def __call__(self, name: str):
        """Context manager timing one phase `name` (CUDA events on a GPU, read at the tick; wall time on a CPU)."""
        if self.on_cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self.runs.setdefault(name, []).append((start, end))
        else:
            t0 = time.perf_counter()
            yield
            self.runs.setdefault(name, []).append(time.perf_counter() - t0)

    def pop_seconds(self) -> Dict[str, float]:
        """Total seconds per phase name since the last call (waiting for the last CUDA event); starts over."""
        if self.on_cuda:
            for runs in self.runs.values():
                runs[-1][1].synchronize()
            seconds = {name: sum(start.elapsed_time(end) for start, end in runs) / 1000 for name, runs in self.runs.items()}
        else:
            seconds = {name: sum(runs) for name, runs in self.runs.items()}
        self.runs = dict()
        return seconds

#----------------------------------------------------------------------------

def training_loop(
    run_dir                 = '.',      # Output directory.
    training_set_kwargs     = {},       # Options for training set.
    data_loader_kwargs      = {},       # Options for torch.utils.data.DataLoader.
    G_kwargs                = {},       # Options for generator network.
    D_kwargs                = {},       # Options for discriminator network.
    G_opt_kwargs            = {},       # Options for generator optimizer.
    D_opt_kwargs            = {},       # Options for discriminator optimizer.
    augment_kwargs          = None,     # Options for augmentation pipeline. None = disable.
    loss_kwargs             = {},       # Options for loss function.
    metrics                 = [],       # Metrics to evaluate during training.
    random_seed             = 0,        # Global random seed.
    num_gpus                = 1,        # Number of processes (GPUs, or CPU ranks with gloo).
    rank                    = 0,        # Rank of the current process in [0, num_gpus[.
    batch_size              = 4,        # Total batch size for one training iteration.
    batch_gpu               = 4,        # Number of samples processed at a time by one process.
    ema_kimg                = 10,       # Half-life of the exponential moving average (EMA) of generator weights.
    ema_rampup              = 0.05,     # EMA ramp-up coefficient. None = no rampup.
    G_reg_interval          = None,     # How often to perform regularization for G? None = disable lazy regularization.
    D_reg_interval          = 16,       # How often to perform regularization for D? None = disable lazy regularization.
    augment_p               = 0,        # Initial value of augmentation probability.
    ada_target              = None,     # ADA target value. None = fixed p.
    ada_interval            = 4,        # How often to perform ADA adjustment?
    ada_kimg                = 500,      # ADA adjustment speed, measured in how many kimg it takes for p to increase/decrease by one unit.
    total_kimg              = 25000,    # Total length of the training, measured in thousands of real images.
    kimg_per_tick           = 4,        # Progress snapshot interval.
    image_snapshot_ticks    = 50,       # How often to save image snapshots? None = disable.
    network_snapshot_ticks  = 50,       # How often to save network snapshots? None = disable.
    image_grid_size         = None,     # (gw, gh) of the image snapshot grids. None = fill a 7680x4320 canvas.
    resume_pkl              = None,     # Network pickle to resume training from.
    resume_kimg             = 0,        # First kimg to report when resuming training.
    resume_state            = None,     # Training checkpoint (checkpoint-*.pt) or run dir to continue exactly; None = fresh.
    checkpoint_ticks        = None,     # How often to save training-state checkpoints? None = with network snapshots.
    keep_checkpoints        = 2,        # How many checkpoints to keep (<= 0: all).
    guard_kwargs            = None,     # training.divergence.DivergenceGuard options. None = no divergence guard.
    write_safetensors       = False,    # Also write network-snapshot-*.safetensors (weights-only) beside each pickle.
    torch_compile           = False,    # Run the loss's G/D forward passes through torch.compile (snapshots stay plain modules).
    amp                     = None,     # 'bf16' = autocast the loss's G/D forward passes to bfloat16. None = full precision.
    detector_dir            = None,     # Folder with metric detector pickles. None = $EG3D_DETECTOR_DIR, else the download cache.
    cudnn_benchmark         = True,     # Enable torch.backends.cudnn.benchmark?
    device                  = None,     # torch.device; None = cuda:<rank> if available, else cpu.
    abort_fn                = None,     # Callback that determines whether to abort training. Must return consistent results across ranks.
    progress_fn             = None,     # Callback function for updating training progress. Called for all ranks.
):
    # Initialize.
    start_time = time.time()
    if device is None:
        device = torch.device('cuda', rank) if torch.cuda.is_available() else torch.device('cpu')
    device = torch.device(device)
    on_cuda = device.type == 'cuda'
    np.random.seed(random_seed * num_gpus + rank)
    torch.manual_seed(random_seed * num_gpus + rank)
    random.seed(random_seed * num_gpus + rank)  # not used by EG3D itself; seeded so that plugins resume exactly too
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = False       # Improves numerical accuracy.
    torch.backends.cudnn.allow_tf32 = False             # Improves numerical accuracy.
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    conv2d_gradfix.enabled = True                       # Improves training speed (EG3D setting).
    grid_sample_gradfix.enabled = False                 # EG3D keeps it off (double backward not needed through it).

    # Training state to continue from (exact resume); read first because the data sampler needs it.
    ckpt = None
    if resume_state is not None:
        ckpt_path, ckpt = checkpoint.load_for_resume(resume_state, num_gpus=num_gpus, log=print if rank == 0 else None)
        if rank == 0:
            print(f'Resuming from "{ckpt_path}" (kimg {ckpt["cur_nimg"] / 1e3:.3f}, tick {ckpt["cur_tick"]})' if ckpt is not None
                  else f'No training checkpoint in "{resume_state}" yet; starting from scratch in the same run dir')
    if checkpoint_ticks is None:
        checkpoint_ticks = network_snapshot_ticks

    # Load training set.
    if rank == 0:
        print('Loading training set...')
    training_set = dnnlib.util.construct_class_by_name(**training_set_kwargs)
    training_set_sampler = misc.InfiniteSampler(dataset=training_set, rank=rank, num_replicas=num_gpus, seed=random_seed)
    # DataLoader workers pull batches ahead of use, so the checkpointed position comes from a twin sampler that is
    # advanced only by what the loop actually consumed.
    consumed_sampler = misc.InfiniteSampler(dataset=training_set, rank=rank, num_replicas=num_gpus, seed=random_seed)
    if ckpt is not None:
        for sampler in (training_set_sampler, consumed_sampler):
            sampler.load_state_dict(checkpoint.sampler_state_from_safe(ckpt['sampler'][rank]))
    consumed_iter = iter(consumed_sampler)
    loader_kwargs = dict(data_loader_kwargs)
    loader_kwargs['pin_memory'] = bool(loader_kwargs.get('pin_memory', False)) and on_cuda  # pinning needs an accelerator
    if loader_kwargs.get('num_workers', 0) == 0:
        loader_kwargs.pop('prefetch_factor', None)
    make_iterator = lambda: iter(torch.utils.data.DataLoader(dataset=training_set, sampler=training_set_sampler,
                                                             batch_size=batch_size // num_gpus, **loader_kwargs))
    training_set_iterator = make_iterator()
    if rank == 0:
        print()
        print('Num images: ', len(training_set))
        print('Image shape:', training_set.image_shape)
        print('Label shape:', training_set.label_shape)
        print()

    # Construct networks.
    if rank == 0:
        print('Constructing networks...')
    common_kwargs = dict(c_dim=training_set.label_dim, img_resolution=training_set.resolution, img_channels=training_set.num_channels)
    G = dnnlib.util.construct_class_by_name(**G_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    G.register_buffer('dataset_label_std', torch.tensor(training_set.get_label_std()).to(device))
    D = dnnlib.util.construct_class_by_name(**D_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval()

    # Resume from existing pickle (EG3D semantics: weights only).
    if (resume_pkl is not None) and (ckpt is None) and (rank == 0):
        print(f'Resuming from "{resume_pkl}"')
        resume_data = legacy.load_network(resume_pkl, trusted=True, adapt=False)  # named on the command line; raw networks
        for name, module in [('G', G), ('D', D), ('G_ema', G_ema)]:
            if resume_data.get(name) is not None:
                shared = set(dict(misc.named_params_and_buffers(resume_data[name]))) & set(dict(misc.named_params_and_buffers(module)))
                if not shared:
                    print(f'Warning: --resume: {name} in {resume_pkl} shares no tensor names with this {name}; nothing copied')
                misc.copy_params_and_buffers(resume_data[name], module, require_all=False)

    # Print network summary tables.
    if rank == 0:
        z = torch.randn([batch_gpu, G.z_dim], device=device)
        c = torch.from_numpy(np.stack([training_set.get_label(i % len(training_set)) for i in range(batch_gpu)])).to(device)
        img = misc.print_module_summary(G, [z, c])
        misc.print_module_summary(D, [img, c])

    # Setup augmentation.
    if rank == 0:
        print('Setting up augmentation...')
    augment_pipe = None
    ada_stats = None
    if (augment_kwargs is not None) and (augment_p > 0 or ada_target is not None):
        augment_pipe = dnnlib.util.construct_class_by_name(**augment_kwargs).train().requires_grad_(False).to(device)
        augment_pipe.p.copy_(torch.as_tensor(augment_p))
        if ada_target is not None:
            ada_stats = training_stats.Collector(regex='Loss/signs/real')

    # Distribute across processes.
    if rank == 0:
        print(f'Distributing across {num_gpus} process(es)...')
    for module in [G, D, G_ema, augment_pipe]:
        if module is not None and num_gpus > 1:
            for param in misc.params_and_buffers(module):
                if param.numel() > 0:
                    torch.distributed.broadcast(param, src=0)

    # Setup training phases.
    if rank == 0:
        print('Setting up training phases...')
    loss = dnnlib.util.construct_class_by_name(device=device, G=G, D=D, augment_pipe=augment_pipe, **loss_kwargs)
    if torch_compile or amp is not None:
        if not hasattr(loss, 'enable_fast_paths'):
            raise ValueError(f'{type(loss).__name__} does not support --compile/--amp (no enable_fast_paths)')
        loss.enable_fast_paths(use_compile=torch_compile, amp=amp)
    phases, optimizers = setup_phases([('G', G, G_opt_kwargs, G_reg_interval), ('D', D, D_opt_kwargs, D_reg_interval)])
    base_lrs = {name: [group['lr'] for group in opt.param_groups] for name, opt in optimizers.items()}
    base_gamma = getattr(loss, 'r1_gamma', None)
    guard = DivergenceGuard(device=device, num_gpus=num_gpus, **guard_kwargs) if guard_kwargs is not None else None
    restore_kwargs = dict(rank=rank, G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe, optimizers=optimizers, loss=loss,
                          ada_stats=ada_stats, samplers=[])
    if ckpt is not None:
        checkpoint.restore(ckpt, **restore_kwargs)  # samplers were restored before the DataLoader started
        if guard is not None and ckpt.get('guard') is not None:
            guard.load_state_dict(ckpt['guard'])
    if guard is not None:
        guard.apply(base_lrs, optimizers, loss, base_gamma)

    # Export sample images.
    grid_size = None
    grid_z = None
    grid_c = None
    if rank == 0:
        print('Exporting sample images...')
        grid_size, images, labels = setup_snapshot_image_grid(training_set=training_set, random_seed=random_seed, grid_size=image_grid_size)
        if ckpt is None or not os.path.isfile(os.path.join(run_dir, 'reals.png')):
            save_image_grid(images, os.path.join(run_dir, 'reals.png'), drange=[0, 255], grid_size=grid_size)
        grid_z = torch.randn([labels.shape[0], G.z_dim], device=device).split(batch_gpu)
        grid_c = torch.from_numpy(labels).to(device).split(batch_gpu)

    # Initialize logs.
    if rank == 0:
        print('Initializing logs...')
    stats_collector = training_stats.Collector(regex='.*')
    phase_timer = PhaseTimer(device)
    guard_stats = training_stats.Collector(regex=r'Loss/(G/loss|D/loss|signs/real|signs/fake)') if guard is not None else None
    stats_metrics = dict()
    stats_jsonl, stats_tfevents = None, None
    if rank == 0:
        stats_jsonl, stats_tfevents = stats_log.open_logs(run_dir, resume_state, ckpt)

    # Train.
    if rank == 0:
        print(f'Training for {total_kimg} kimg...')
        print()
    cur_nimg = resume_kimg * 1000
    cur_tick = 0
    batch_idx = 0
    if ckpt is not None:
        cur_nimg, cur_tick, batch_idx = ckpt['cur_nimg'], ckpt['cur_tick'], ckpt['batch_idx']
        checkpoint.restore_rng(ckpt['rng'][rank], device)  # last: setup above consumed random numbers
        if cur_nimg >= total_kimg * 1000:
            if rank == 0:
                print(f'Training already reached {total_kimg} kimg; nothing to do (raise --kimg to continue).')
                if stats_tfevents is not None:
                    stats_tfevents.close()
            return
        del ckpt  # conserve memory
    tick_start_nimg = cur_nimg
    tick_start_time = time.time()
    maintenance_time = tick_start_time - start_time
    if progress_fn is not None:
        progress_fn(0, total_kimg)
    while True:

        # Fetch training data.
        with torch.autograd.profiler.record_function('data_fetch'):
            phase_real_img, phase_real_c, phase_extras = _split_batch(next(training_set_iterator), device, batch_gpu)
            for _ in range(batch_size // num_gpus):
                next(consumed_iter)
            all_gen_z = torch.randn([len(phases) * batch_size, G.z_dim], device=device)
            all_gen_z = [phase_gen_z.split(batch_gpu) for phase_gen_z in all_gen_z.split(batch_size)]
            all_gen_c = [training_set.get_label(np.random.randint(len(training_set))) for _ in range(len(phases) * batch_size)]
            all_gen_c = torch.from_numpy(np.stack(all_gen_c)).to(device, non_blocking=True)
            all_gen_c = [phase_gen_c.split(batch_gpu) for phase_gen_c in all_gen_c.split(batch_size)]

        # Execute training phases.
        for phase, phase_gen_z, phase_gen_c in zip(phases, all_gen_z, all_gen_c):
            if batch_idx % phase.interval != 0:
                continue
            with phase_timer(phase.name):
                run_phase(phase, loss, zip(phase_real_img, phase_real_c, phase_extras, phase_gen_z, phase_gen_c),
                          cur_nimg=cur_nimg, num_gpus=num_gpus, guard=guard)

        # Update G_ema.
        with torch.autograd.profiler.record_function('Gema'):
            ema_nimg = ema_kimg * 1000
            if ema_rampup is not None:
                ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
            ema_beta = 0.5 ** (batch_size / max(ema_nimg, 1e-8))
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.copy_(p.lerp(p_ema, ema_beta))
            for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                b_ema.copy_(b)
            _sync_copy_attrs(G, G_ema)

        # Update state.
        cur_nimg += batch_size
        batch_idx += 1

        # Execute ADA heuristic.
        if (ada_stats is not None) and (batch_idx % ada_interval == 0):
            ada_stats.update()
            adjust = np.sign(ada_stats['Loss/signs/real'] - ada_target) * (batch_size * ada_interval) / (ada_kimg * 1000)
            augment_pipe.p.copy_((augment_pipe.p + adjust).max(misc.constant(0, device=device)))

        # Perform maintenance tasks once per tick.
        done = (cur_nimg >= total_kimg * 1000)
        if (not done) and (cur_tick != 0) and (cur_nimg < tick_start_nimg + kimg_per_tick * 1000):
            continue

        # Print status line, accumulating the same information in training_stats.
        tick_end_time = time.time()
        status = stats_log.report_status(cur_tick=cur_tick, cur_nimg=cur_nimg, start_time=start_time,
            tick_start_time=tick_start_time, tick_end_time=tick_end_time, tick_start_nimg=tick_start_nimg,
            maintenance_time=maintenance_time, device=device, augment_pipe=augment_pipe)
        if rank == 0:
            print(status)

        # Divergence guard: roll back to the last good checkpoint instead of snapshotting a broken state.
        if guard is not None:
            guard_stats.update()
            verdict = guard.check(cur_tick, {n: (guard_stats.num(n), guard_stats.mean(n)) for n in guard_stats.names()}, [G, D, G_ema])
            if verdict is not None:
                try:
                    cur_nimg, cur_tick, batch_idx = rollback_to_checkpoint(verdict, cur_nimg=cur_nimg, cur_tick=cur_tick, guard=guard,
                        run_dir=run_dir, rank=rank, num_gpus=num_gpus, device=device, random_seed=random_seed,
                        restore_kwargs=restore_kwargs, samplers=[training_set_sampler, consumed_sampler],
                        base_lrs=base_lrs, base_gamma=base_gamma, stats_jsonl=stats_jsonl,
                        collectors=[stats_collector, guard_stats, ada_stats])
                except TrainingDiverged:
                    if stats_tfevents is not None:
                        stats_tfevents.close()
                    raise
                del training_set_iterator  # stops its workers; the restored sampler needs a new one
                training_set_iterator = make_iterator()
                consumed_iter = iter(consumed_sampler)
                stats_collector.update()  # the failed tick's statistics must not leak into the next stats line
                phase_timer.pop_seconds()
                tick_start_nimg = cur_nimg
                tick_start_time = time.time()
                maintenance_time = tick_start_time - tick_end_time
                continue

        # Check for abort.
        if (not done) and (abort_fn is not None) and abort_fn():
            done = True
            if rank == 0:
                print()
                print('Aborting...')

        # Save image snapshot.
        if (rank == 0) and (image_snapshot_ticks is not None) and (done or cur_tick % image_snapshot_ticks == 0):
            snapshots.save_fake_grids(G_ema, grid_z, grid_c, run_dir, f'{cur_nimg // 1000:06d}', grid_size)

        # Save network snapshot.
        snapshot_pkl = None
        snapshot_data = None
        if (network_snapshot_ticks is not None) and (done or cur_tick % network_snapshot_ticks == 0):
            snapshot_pkl, snapshot_data = snapshots.save_network_snapshot(run_dir, cur_nimg, training_set_kwargs,
                dict(G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe), rank=rank, num_gpus=num_gpus,
                write_safetensors=write_safetensors)

        # Evaluate metrics.
        if (snapshot_data is not None) and (len(metrics) > 0):
            from metrics import metric_main  # imported here: training without metrics must not need the package
            if rank == 0:
                print(run_dir)
                print('Evaluating metrics...')
            for metric in metrics:
                result_dict = metric_main.calc_metric(metric=metric, G=snapshot_data['G_ema'], dataset_kwargs=training_set_kwargs,
                                                      num_gpus=num_gpus, rank=rank, device=device, detector_dir=detector_dir)
                if rank == 0:
                    metric_main.report_metric(result_dict, run_dir=run_dir, snapshot_pkl=snapshot_pkl)
                stats_metrics.update(result_dict.results)
        del snapshot_data  # conserve memory

        # Collect statistics.
        phase_seconds = phase_timer.pop_seconds()
        for phase in phases:  # in phase order: every rank must report the same names in the same order
            if phase.name in phase_seconds:
                training_stats.report0('Timing/' + phase.name, phase_seconds[phase.name])
        stats_collector.update()
        stats_dict = stats_collector.as_dict()

        # Update logs.
        stats_log.write_logs(stats_jsonl, stats_tfevents, stats_dict, stats_metrics, cur_nimg=cur_nimg, start_time=start_time)
        if progress_fn is not None:
            progress_fn(cur_nimg // 1000, total_kimg)

        # Update state.
        save_checkpoint = (checkpoint_ticks is not None) and (done or cur_tick % checkpoint_ticks == 0)
        cur_tick += 1
        tick_start_nimg = cur_nimg

        # Save the training state last, so that it includes all random numbers drawn during maintenance.
        if save_checkpoint:
            state = checkpoint.capture(cur_nimg=cur_nimg, cur_tick=cur_tick, batch_idx=batch_idx, num_gpus=num_gpus,
                                       rank=rank, device=device, G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe,
                                       optimizers=optimizers, loss=loss, ada_stats=ada_stats, guard=guard,
                                       sampler=consumed_sampler, run_dir=run_dir)
            if rank == 0:
                checkpoint.save(state, os.path.join(run_dir, checkpoint.checkpoint_name(cur_nimg, cur_tick)))
                checkpoint.prune(run_dir, keep_checkpoints)
            del state
            if guard is not None:
                guard.passed(cur_tick)
        tick_start_time = time.time()
        maintenance_time = tick_start_time - tick_end_time
        if done:
            break

    # Done.
    if stats_tfevents is not None:
        stats_tfevents.close()
    if rank == 0:
        print()
        print('Exiting...')

#----------------------------------------------------------------------------
