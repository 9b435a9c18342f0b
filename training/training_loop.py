"""Main training loop (EG3D semantics): phases with lazy regularisation, EMA, ADA, logging, snapshots, metrics."""

import copy
import os
import pickle
import random
import time
from typing import Any, Callable, Optional

import numpy as np
import PIL.Image
import psutil
import torch

import dnnlib
import legacy
from torch_utils import misc
from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import grid_sample_gradfix
from training import checkpoint
from training.divergence import DivergenceGuard, TrainingDiverged, rollback_to_checkpoint

#----------------------------------------------------------------------------
# Image grids.

def setup_snapshot_image_grid(training_set, random_seed: int = 0, grid_size: Optional[tuple] = None):
    """Pick grid cells from the training set: random for unlabeled data, else one label group per row."""
    rnd = np.random.RandomState(random_seed)
    if grid_size is None:
        gw = np.clip(7680 // training_set.image_shape[2], 7, 32)
        gh = np.clip(4320 // training_set.image_shape[1], 4, 32)
    else:
        gw, gh = grid_size
    gw, gh = int(gw), int(gh)

    if not training_set.has_labels:
        all_indices = list(range(len(training_set)))
        rnd.shuffle(all_indices)
        grid_indices = [all_indices[i % len(all_indices)] for i in range(gw * gh)]
    else:
        groups = {}  # label -> [idx, ...]
        for idx in range(len(training_set)):
            groups.setdefault(tuple(training_set.get_details(idx).raw_label.flat[::-1]), []).append(idx)
        order = list(groups.keys())
        rnd.shuffle(order)
        for label in order:
            rnd.shuffle(groups[label])
        grid_indices = []
        for y in range(gh):
            label = order[y % len(order)]
            indices = groups[label]
            grid_indices += [indices[x % len(indices)] for x in range(gw)]
            groups[label] = indices[gw % len(indices):] + indices[:gw % len(indices)]  # rotate for the next use

    items = [training_set[i] for i in grid_indices]
    images = np.stack([item[0] for item in items])
    labels = np.stack([item[1] for item in items])
    return (gw, gh), images, labels

def save_image_grid(img: np.ndarray, fname: str, drange, grid_size) -> None:
    lo, hi = drange
    img = np.asarray(img, dtype=np.float32)
    img = (img - lo) * (255 / max(hi - lo, 1e-8))
    img = np.rint(img).clip(0, 255).astype(np.uint8)
    gw, gh = grid_size
    _N, C, H, W = img.shape
    img = img.reshape(gh, gw, C, H, W).transpose(0, 3, 1, 4, 2).reshape(gh * H, gw * W, C)
    if C not in (1, 3):
        img = img[:, :, :3] if C > 3 else img[:, :, :1]
    with dnnlib.util.atomic_write(fname, 'wb') as f:
        PIL.Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img, 'L' if img.shape[2] == 1 else 'RGB').save(f, format='png')

#----------------------------------------------------------------------------

def _split_batch(batch, device, batch_gpu):
    """Dataset batch (img, c[, extras]) -> per-chunk lists; images become float in [-1, 1]."""
    img, c = batch[0], batch[1]
    extras = batch[2] if len(batch) > 2 else {}
    img = (img.to(device).to(torch.float32) / 127.5 - 1).split(batch_gpu)
    c = c.to(device).split(batch_gpu)
    chunks = [{} for _ in img]
    for k, v in extras.items():
        for chunk, part in zip(chunks, torch.as_tensor(v).to(device).split(batch_gpu)):
            chunk[k] = part
    return img, c, chunks

def _snapshot_module(module: torch.nn.Module) -> torch.nn.Module:
    module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
    # .cpu() moves parameters and buffers only; plain tensor attributes (e.g. the renderer's plane_axes) would
    # keep a CUDA location in the pickle and fail to load on CPU-only machines.
    for m in module.modules():
        for k, v in list(vars(m).items()):
            if isinstance(v, torch.Tensor) and not k.startswith('_') and v.device.type != 'cpu':
                setattr(m, k, v.cpu())
    return module

def _sync_copy_attrs(G, G_ema):
    """State that lives outside parameters/buffers but must follow G (EG3D: neural rendering resolution, rendering kwargs)."""
    if hasattr(G, 'neural_rendering_resolution'):
        G_ema.neural_rendering_resolution = G.neural_rendering_resolution
    if hasattr(G, 'rendering_kwargs'):
        G_ema.rendering_kwargs = copy.copy(G.rendering_kwargs)

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
        resume_data = legacy.load_network(resume_pkl, trusted=True)  # the user named this file on the command line
        for name, module in [('G', G), ('D', D), ('G_ema', G_ema)]:
            if resume_data.get(name) is not None:
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
    phases = []
    optimizers = dict()
    for name, module, opt_kwargs, reg_interval in [('G', G, G_opt_kwargs, G_reg_interval), ('D', D, D_opt_kwargs, D_reg_interval)]:
        opt_kwargs = dnnlib.EasyDict(opt_kwargs)
        if 'betas' in opt_kwargs:
            opt_kwargs.betas = [float(b) for b in opt_kwargs.betas]  # torch 2.x Adam rejects mixed int/float betas
        if reg_interval is None:
            opt = dnnlib.util.construct_class_by_name(params=module.parameters(), **opt_kwargs)
            phases += [dnnlib.EasyDict(name=name + 'both', module=module, opt=opt, interval=1)]
        else:  # Lazy regularization: scale lr and betas so that the main+reg pair acts like one optimizer.
            mb_ratio = reg_interval / (reg_interval + 1)
            opt_kwargs.lr = opt_kwargs.lr * mb_ratio
            opt_kwargs.betas = [beta ** mb_ratio for beta in opt_kwargs.betas]
            opt = dnnlib.util.construct_class_by_name(module.parameters(), **opt_kwargs)
            phases += [dnnlib.EasyDict(name=name + 'main', module=module, opt=opt, interval=1)]
            phases += [dnnlib.EasyDict(name=name + 'reg', module=module, opt=opt, interval=reg_interval)]
        optimizers[name] = opt
    for phase in phases:
        phase.elapsed = None
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
    guard_stats = training_stats.Collector(regex=r'Loss/(G/loss|D/loss|signs/real|signs/fake)') if guard is not None else None
    stats_metrics = dict()
    stats_jsonl = None
    stats_tfevents = None
    if rank == 0:
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
            all_gen_c = torch.from_numpy(np.stack(all_gen_c)).to(device)
            all_gen_c = [phase_gen_c.split(batch_gpu) for phase_gen_c in all_gen_c.split(batch_size)]

        # Execute training phases.
        for phase, phase_gen_z, phase_gen_c in zip(phases, all_gen_z, all_gen_c):
            if batch_idx % phase.interval != 0:
                continue
            if on_cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()

            # Accumulate gradients.
            phase.opt.zero_grad(set_to_none=True)
            phase.module.requires_grad_(True)
            for real_img, real_c, extras, gen_z, gen_c in zip(phase_real_img, phase_real_c, phase_extras, phase_gen_z, phase_gen_c):
                loss.accumulate_gradients(phase=phase.name, real_img=real_img, real_c=real_c, gen_z=gen_z, gen_c=gen_c,
                                          gain=phase.interval, cur_nimg=cur_nimg, **extras)
            phase.module.requires_grad_(False)

            # Update weights: average gradients over ranks in one flat all-reduce; NaN/Inf would poison Adam.
            with torch.autograd.profiler.record_function(phase.name + '_opt'):
                params = [param for param in phase.module.parameters() if param.numel() > 0 and param.grad is not None]
                if len(params) > 0:
                    flat = torch.cat([param.grad.flatten() for param in params])
                    if num_gpus > 1:
                        torch.distributed.all_reduce(flat)
                        flat /= num_gpus
                    if guard is not None:
                        guard.observe_grads(flat)
                    torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
                    grads = flat.split([param.numel() for param in params])
                    for param, grad in zip(params, grads):
                        param.grad = grad.reshape(param.shape)
                phase.opt.step()

            if on_cuda:
                torch.cuda.synchronize(device)
            phase.elapsed = (phase.elapsed or 0) + time.perf_counter() - t0

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
        cpu_gb = psutil.Process(os.getpid()).memory_info().rss / 2**30
        gpu_gb = torch.cuda.max_memory_allocated(device) / 2**30 if on_cuda else 0.0
        reserved_gb = torch.cuda.max_memory_reserved(device) / 2**30 if on_cuda else 0.0
        if on_cuda:
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
        if rank == 0:
            print(' '.join(fields))

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
                for phase in phases:
                    phase.elapsed = None
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
            with torch.no_grad():
                out = [G_ema(z=z, c=c, noise_mode='const') for z, c in zip(grid_z, grid_c)]
            tag = f'{cur_nimg // 1000:06d}'
            images = torch.cat([o['image'].cpu() for o in out]).numpy()
            save_image_grid(images, os.path.join(run_dir, f'fakes{tag}.png'), drange=[-1, 1], grid_size=grid_size)
            if 'image_raw' in out[0]:
                images_raw = torch.cat([o['image_raw'].cpu() for o in out]).numpy()
                save_image_grid(images_raw, os.path.join(run_dir, f'fakes{tag}_raw.png'), drange=[-1, 1], grid_size=grid_size)
            if 'image_depth' in out[0]:
                images_depth = -torch.cat([o['image_depth'].cpu() for o in out]).numpy()
                save_image_grid(images_depth, os.path.join(run_dir, f'fakes{tag}_depth.png'),
                                drange=[images_depth.min(), images_depth.max()], grid_size=grid_size)

        # Save network snapshot.
        snapshot_pkl = None
        snapshot_data = None
        if (network_snapshot_ticks is not None) and (done or cur_tick % network_snapshot_ticks == 0):
            snapshot_data = dict(training_set_kwargs=dict(training_set_kwargs))
            for name, module in [('G', G), ('D', D), ('G_ema', G_ema), ('augment_pipe', augment_pipe)]:
                if module is not None:
                    if num_gpus > 1:
                        misc.check_ddp_consistency(module, ignore_regex=r'.*\.[^.]+_(avg|ema)')
                    module = _snapshot_module(module)
                snapshot_data[name] = module
                del module  # conserve memory
            snapshot_pkl = os.path.join(run_dir, f'network-snapshot-{cur_nimg // 1000:06d}.pkl')
            if rank == 0:
                with dnnlib.util.atomic_write(snapshot_pkl, 'wb') as f:
                    pickle.dump(snapshot_data, f)
                    checkpoint.test_write_hook(snapshot_pkl)
                if write_safetensors:
                    legacy.save_safetensors(snapshot_data, snapshot_pkl[:-len('.pkl')] + '.safetensors')

        # Evaluate metrics.
        if (snapshot_data is not None) and (len(metrics) > 0):
            from metrics import metric_main  # imported here: training without metrics must not need the package
            if rank == 0:
                print(run_dir)
                print('Evaluating metrics...')
            for metric in metrics:
                result_dict = metric_main.calc_metric(metric=metric, G=snapshot_data['G_ema'], dataset_kwargs=training_set_kwargs,
                                                      num_gpus=num_gpus, rank=rank, device=device)
                if rank == 0:
                    metric_main.report_metric(result_dict, run_dir=run_dir, snapshot_pkl=snapshot_pkl)
                stats_metrics.update(result_dict.results)
        del snapshot_data  # conserve memory

        # Collect statistics.
        for phase in phases:
            if phase.elapsed is not None:
                training_stats.report0('Timing/' + phase.name, phase.elapsed)
                phase.elapsed = None
        stats_collector.update()
        stats_dict = stats_collector.as_dict()

        # Update logs.
        timestamp = time.time()
        if stats_jsonl is not None:
            checkpoint.append_jsonl(stats_jsonl, dict(stats_dict, timestamp=timestamp))
        if stats_tfevents is not None:
            global_step = int(cur_nimg / 1e3)
            walltime = timestamp - start_time
            for name, value in stats_dict.items():
                stats_tfevents.add_scalar(name, value.mean, global_step=global_step, walltime=walltime)
            for name, value in stats_metrics.items():
                stats_tfevents.add_scalar(f'Metrics/{name}', value, global_step=global_step, walltime=walltime)
            stats_tfevents.flush()
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
