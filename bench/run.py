"""Benchmark suite: training step per phase, renderer rays/s, KD head share, data loading vs need, peak memory.

Every figure is reported with a baseline measured in the same run (plain vs fast path, EG3D vs 3DGP, KD off vs on,
loader vs the step's consumption). Step figures come from fresh worker processes (one per configuration and
mode), so peak RSS and the process-global heap setting are per configuration; the renderer's two tri-plane
sampling paths alternate in one worker.

\b
python -m bench                          # CPU, 1 timed iteration per config; table + bench/results/bench.json
python -m bench --full                   # 2 timed iterations and a 3DGP plain-path row (about twice as long)
python -m bench --root /tmp/old_tree     # time the plain step of another code base too (e.g. an older commit)
python -m bench --device cuda            # GPU (also see bench/gpu_check.sh)
"""

import json
import os
import resource
import subprocess
import sys
import time

import click
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#----------------------------------------------------------------------------
# Worker side: runs in a fresh process, prints one JSON line.

def _set_mode(mode: str) -> dict:
    """plain = the reference CPU paths and glibc's default heap; fast = CPU fast paths + heap reuse."""
    from torch_utils.ops import conv2d_gradfix, upfirdn2d
    conv2d_gradfix.enabled = True # as the training loop sets it
    fast = (mode == 'fast')
    upfirdn2d.cpu_fast = fast # attributes are harmless no-ops on trees that lack the fast paths (--root)
    try:
        from training.volumetric_rendering import renderer
        renderer.fast_cpu_sampling = fast
        from torch_utils.ops import host_malloc
        return dict(heap_tuned=host_malloc.tune() if fast else False)
    except ImportError:
        return dict(heap_tuned=False)

def _build_eg3d256(device, torch, dnnlib, st):
    """EG3D at 256 px for the GPU check: the ffhq preset's shape (cbase 32768, cmax 512, 48+48 samples, 64 px neural
    rendering, the preset's superresolution module for 256 px) through bench/step_time.build."""
    from training.presets import SR_MODULES
    G, _D, loss, phases = st.build(device, torch, dnnlib, res=256, cbase=32768, cmax=512, depth=48, nrr=64,
                                   sr_module=SR_MODULES[256])
    return G, loss, phases

def _build_3dgp(device, torch, batch, big=False):
    """3DGP 64x64-patch config: at the tiny widths of bench-baseline.md with 128 px images (CPU), or at preset_3dgp's
    defaults with 256 px images (big=True, GPU). Same structure as preset_3dgp, built without a dataset."""
    from eg3d_ext.generator import Generator
    from eg3d_ext.discriminator import Discriminator
    from eg3d_ext.loss_3dgp import Loss3DGP
    c_dim, patch = 10, 64
    res, cbase, cmax, depth, tri = (256, 32768, 512, 32, 512) if big else (128, 4096, 64, 24, 256)
    G = Generator(z_dim=512, c_dim=c_dim, w_dim=512, img_resolution=res, patch_resolution=patch,
        tri_plane_resolution=tri, tri_plane_channels=32, mlp_kwargs=dict(hid_dim=64, num_layers=2),
        rendering_kwargs=dict(depth_resolution=depth, depth_resolution_importance=depth), mapping_kwargs=dict(num_layers=2),
        channel_base=cbase, channel_max=cmax, num_fp16_res=0, conv_clamp=None, fused_modconv_default='inference_only',
        camera_prior_kwargs=dict(name='uniform'), camera_generator_kwargs=dict(hid_dim=256, embed_dim=16,
        lr_multiplier=0.1), depth_adaptor_kwargs=dict(hid_dim=64)).train().requires_grad_(False).to(device)
    D = Discriminator(c_dim=c_dim, img_resolution=res, depth_channels=1, patch_resolution=patch, channel_base=cbase,
        channel_max=cmax, num_fp16_res=4, conv_clamp=256, mbstd_group_size=4, hyper_mod=True,
        kd_dim=2048).train().requires_grad_(False).to(device)
    loss = Loss3DGP(device, G, D, r1_gamma=1, blur_init_sigma=10, blur_fade_kimg=200, depth_blur_scale=30,
        patch_kwargs=dict(resolution=patch, min_scale=patch / res, group_size=4), kd_weight=1.0)
    from step_time import adam_phases
    phases = adam_phases(torch, G, D, None) # preset_3dgp: G_reg_interval None -> one G phase
    g = torch.Generator().manual_seed(0)
    extras = dict(depth=(torch.rand([batch, 1, res, res], generator=g) * 2 - 1).to(device),
                  embedding=torch.randn([batch, 2048], generator=g).to(device))
    real_c = torch.nn.functional.one_hot(torch.arange(batch) % c_dim, c_dim).float().to(device)
    return G, loss, phases, extras, real_c, (lambda b, rnd: real_c)

def _time_phases(torch, loss, phases, real_img, real_c, make_c, extras, batch, z_dim, device, iters, warmup):
    from step_time import timed_phase
    rnd = np.random.RandomState(0)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == 'cuda' else (lambda: None)
    rows = []
    for it in range(warmup + iters):
        row = {}
        for name, module, opt, interval in phases:
            gen_z = torch.randn([batch, z_dim], device=device)
            gen_c = make_c(batch, rnd).to(device)
            row[name] = timed_phase(torch, loss, name, module, opt, interval, real_img, real_c, gen_z, gen_c, sync, extras)
        if it >= warmup:
            rows.append(row)
    med = lambda k, i: float(np.median([r[k][i] for r in rows]))
    return {k: dict(wall_s=med(k, 0), cpu_s=med(k, 1)) for k in rows[0]}

def _render_rates(torch, dnnlib, st, device, iters: int, batch: int = 4) -> dict:
    """Rays/s of the EG3D renderer and of 3DGP's renderer alone (train: fwd+bwd; eval: fwd) with the tri-plane
    sampler's reference path (grid_sample) and with the CPU fast path (row gathers, `renderer.fast_cpu_sampling`),
    alternated in this process. Each renderer runs as in its bench step config (decoder, ray range, rays per batch:
    EG3D 32^2 neural rendering, 3DGP 64^2 patches) on the same random tri-planes [batch, 3, 32, 256, 256] with 24+24
    samples per ray. 3DGP trains twice: constant rays (prior cameras) and rays that need gradients (the learned
    camera). Per CPU second on CPU (1 thread: immune to other jobs), per wall second on a GPU."""
    from eg3d_ext.generator import rays_from_c25
    from training.volumetric_rendering import renderer
    from training.volumetric_rendering.ray_sampler import RaySampler
    G_eg3d = st.build(device, torch, dnnlib)[0]
    G_3dgp = _build_3dgp(device, torch, batch)[0]
    c = torch.from_numpy(st.frontal_cameras(batch, np.random.RandomState(1))).to(device)
    ro, rd = RaySampler()(c[:, :16].view(-1, 4, 4), c[:, 16:].view(-1, 3, 3), 32)
    o3, d3 = rays_from_c25(G_3dgp.sample_cameras(torch.zeros([batch, G_3dgp.z_dim], device=device), None, 'prior')[1], 64)
    d3_grad = d3.clone().requires_grad_(True)
    eg3d = renderer.ImportanceRenderer()
    cases = [('eg3d', ('train', 'eval'), lambda planes: eg3d(planes, G_eg3d.decoder, ro, rd, G_eg3d.rendering_kwargs)[0]),
             ('3dgp', ('train', 'eval'), lambda planes: G_3dgp.render(planes, o3, d3)[0]),
             ('3dgp_ray_grad', ('train',), lambda planes: G_3dgp.render(planes, o3, d3_grad)[0])]
    cuda = device.type == 'cuda'
    clock = time.perf_counter if cuda else time.process_time
    out = {}
    for name, modes, render in cases:
        planes = torch.randn([batch, 3, 32, 256, 256], device=device, requires_grad=True)
        for mode in modes:
            train = (mode == 'train')
            G_3dgp.train(train)
            def run():
                with torch.set_grad_enabled(train):
                    rgb = render(planes)
                    if train:
                        rgb.square().sum().backward()
                    return rgb.shape[0] * rgb.shape[1] # rays
            seconds = dict(grid_sample=0.0, gathers=0.0)
            for _round in range(2): # alternate the two paths to cancel drift on a shared machine
                for sampling in seconds:
                    renderer.fast_cpu_sampling = (sampling == 'gathers')
                    rays = run() # warm-up
                    if cuda:
                        torch.cuda.synchronize(device)
                    t0 = clock()
                    for _ in range(iters):
                        run()
                    if cuda:
                        torch.cuda.synchronize(device)
                    seconds[sampling] += clock() - t0
            for sampling, sec in seconds.items():
                out[f'{name}_rays_per_s_{mode}_{sampling}'] = 2 * rays * iters / sec
    return out

def run_worker(cfg: str, mode: str, root: str, device: str, threads: int, iters: int, warmup: int, batch: int) -> dict:
    sys.path.insert(0, root)
    import torch
    import dnnlib
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    res = dict(cfg=cfg, mode=mode, root=root, threads=threads, batch=batch, iters=iters, torch=torch.__version__)
    res.update(_set_mode(mode))
    dev = torch.device(device)
    import step_time as st # this suite's bench/step_time.py (the script's folder): it builds through root's classes
    if dev.type == 'cuda':
        torch.backends.cudnn.benchmark = True # as the training loop
    if cfg == 'render':
        return dict(res, **_render_rates(torch, dnnlib, st, dev, max(iters, 2)))
    if cfg in ('eg3d', 'eg3d256'):
        if cfg == 'eg3d':
            G, _D, loss, phases = st.build(dev, torch, dnnlib)
        else:
            G, loss, phases = _build_eg3d256(dev, torch, dnnlib, st)
        real_c = torch.from_numpy(st.frontal_cameras(batch, np.random.RandomState(0))).to(dev)
        make_c, extras = (lambda b, rnd: torch.from_numpy(st.frontal_cameras(b, rnd))), {}
    else:
        G, loss, phases, extras, real_c, make_c = _build_3dgp(dev, torch, batch, big=(cfg == '3dgp256'))
    res['num_params_G'] = sum(p.numel() for p in G.parameters())
    if iters == 0:
        return res # build check only
    real_img = torch.rand([batch, 3, G.img_resolution, G.img_resolution], device=dev) * 2 - 1
    if dev.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(dev)
    res['phases'] = _time_phases(torch, loss, phases, real_img, real_c, make_c, extras, batch, G.z_dim, dev, iters, warmup)
    res['step_wall_s'] = sum(p['wall_s'] for p in res['phases'].values())
    res['step_cpu_s'] = sum(p['cpu_s'] for p in res['phases'].values())
    # Training-loop cost per kimg: reg phases run every `interval` iterations (Greg 4, Dreg 16).
    every = dict(Greg=4, Dreg=16)
    res['sec_per_kimg'] = sum(p['wall_s'] / every.get(k, 1) for k, p in res['phases'].items()) / batch * 1000
    res['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if dev.type == 'cuda':
        res['gpu_max_allocated_mb'] = torch.cuda.max_memory_allocated(dev) / 2**20
    return res

def memory_estimate(batch: int = 2, target_batch: int = 16, threads: int = 2) -> dict:
    """3DGP 256 (preset widths): bytes of the tensors each phase saves for backward (measured on CPU at `batch`,
    parameters excluded, each storage once), extrapolated linearly to `target_batch` + weights/grads/Adam/G_ema."""
    sys.path[:0] = [ROOT, os.path.join(ROOT, 'bench')]
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device('cpu')
    G, loss, phases, extras, real_c, _make_c = _build_3dgp(dev, torch, batch, big=True)
    D = loss.D
    param_ptrs = {p.untyped_storage().data_ptr() for m in (G, D) for p in m.parameters()}
    real_img = torch.rand([batch, 3, 256, 256]) * 2 - 1
    out = dict(measured_batch=batch, target_batch=target_batch, phases={})
    for name, module, _opt, interval in phases:
        seen = {}
        def pack(t):
            st = t.untyped_storage()
            if st.data_ptr() not in param_ptrs:
                seen[st.data_ptr()] = st.nbytes()
            return t
        module.requires_grad_(True)
        t0 = time.time()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss.accumulate_gradients(phase=name, real_img=real_img, real_c=real_c, gen_z=torch.randn([batch, 512]),
                                      gen_c=real_c, gain=interval, cur_nimg=0, **extras)
        module.requires_grad_(False)
        module.zero_grad(set_to_none=True)
        out['phases'][name] = dict(saved_mb=sum(seen.values()) / 2**20, seconds=time.time() - t0)
    n_G, n_D = (sum(p.numel() for p in m.parameters()) for m in (G, D))
    fixed = 4 * (n_G * 5 + n_D * 4) # fp32: G (param, grad, Adam m, v, G_ema), D (param, grad, m, v)
    worst = max(v['saved_mb'] for v in out['phases'].values())
    out.update(params_G=n_G, params_D=n_D, fixed_mb=fixed / 2**20, worst_phase_saved_mb=worst,
               saved_mb_at_target=worst * target_batch / batch)
    # Transients (the output gradient of the largest layer, cuDNN workspaces, allocator rounding): +30%.
    out['estimate_gb_at_target'] = (out['fixed_mb'] + out['saved_mb_at_target'] * 1.3) / 1024
    return out

#----------------------------------------------------------------------------
# Driver side.

def _spawn(args: list, timeout: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), '--worker', *args]
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return dict(error=f'timed out after {timeout:.0f} s')
    lines = [l for l in p.stdout.splitlines() if l.startswith('{')]
    if p.returncode != 0 or not lines:
        return dict(error=(p.stderr.strip().splitlines() or ['no output'])[-1][:300])
    out = json.loads(lines[-1])
    out['process_s'] = time.time() - t0
    return out

def _kd_share(device: str, threads: int, batch: int) -> dict:
    """KD head share of the real-width 3DGP D step by FLOPs (exact); also timed on a GPU, where timing noise is
    below the share (on a shared CPU it is ~100x the share)."""
    import torch
    from bench.kd_share import measure
    torch.set_num_threads(threads)
    return measure('real', batch=batch, device=device, iters=5 if device.startswith('cuda') else 0)

def _data(workers: int, need_images_per_s: float) -> dict:
    """dataset_tool synthetic/convert images/s and RGBDDataset loader images/s vs the training step's need."""
    from bench.data_throughput import bench as data_bench
    res = data_bench(num_synthetic=128, num_convert=64, resolution=128, workers=workers)
    best = max(v for k, v in res.items() if k.startswith('loader_images_per_s'))
    return dict(res, step_need_images_per_s=need_images_per_s, loader_vs_need=best / need_images_per_s)

def _fmt(v, unit=''):
    return '-' if v is None else (f'{v:.3g}{unit}' if isinstance(v, float) else str(v))

@click.command(help=__doc__)
@click.option('--out', default=os.path.join(ROOT, 'bench', 'results', 'bench.json'), show_default=True)
@click.option('--device', default='cpu', show_default=True)
@click.option('--threads', type=int, default=1, show_default=True,
              help='torch threads per worker (1: CPU seconds stay meaningful on a shared machine; 2 = bench-baseline)')
@click.option('--iters', type=int, default=1, show_default=True, help='Timed training iterations per config')
@click.option('--warmup', type=int, default=1, show_default=True)
@click.option('--batch', type=int, default=4, show_default=True)
@click.option('--full', is_flag=True, help='2 timed iterations (unless --iters) and a 3DGP plain-path row')
@click.option('--root', default=None, help='Also time the plain EG3D step of this code base (e.g. an older checkout)')
@click.option('--skip', default='', help='Comma list of sections to skip: eg3d,3dgp,render,kd,data')
@click.option('--memory-estimate', 'mem_est', is_flag=True, help='Only the 3DGP-256 batch-16 memory estimate (~2 min)')
@click.option('--worker', nargs=2, default=None, hidden=True) # cfg mode
@click.option('--worker-root', default=ROOT, hidden=True)
def main(out, device, threads, iters, warmup, batch, full, root, skip, mem_est, worker, worker_root):
    if mem_est:
        r = memory_estimate(threads=threads)
        print(json.dumps(r, indent=1))
        return
    if worker:
        print(json.dumps(run_worker(worker[0], worker[1], worker_root, device, threads, iters, warmup, batch)))
        return
    sys.path.insert(0, ROOT)
    t_start = time.time()
    iters = max(iters, 2) if full else iters
    skip = set(s for s in skip.split(',') if s)
    common = ['--device', device, '--threads', str(threads), '--iters', str(iters), '--warmup', str(warmup),
              '--batch', str(batch)]
    R = dict(device=device, threads=threads, iters=iters, batch=batch, cpu_count=os.cpu_count(),
             loadavg_start=os.getloadavg())
    runs = [('eg3d', 'plain', ROOT), ('eg3d', 'fast', ROOT)] if 'eg3d' not in skip else []
    if '3dgp' not in skip:
        runs += [('3dgp', 'fast', ROOT)] + ([('3dgp', 'plain', ROOT)] if full else [])
    if 'render' not in skip:
        runs += [('render', 'fast', ROOT)] # both sampling paths in one process (the heap setting is process-wide)
    if root:
        runs += [('eg3d', 'plain', os.path.abspath(root))]
    for cfg, mode, r in runs:
        key = 'render' if cfg == 'render' else f'{cfg}_{mode}' + ('' if r == ROOT else '_root')
        print(f'[bench] {key} ...', flush=True)
        R[key] = _spawn([cfg, mode, '--worker-root', r, *common], timeout=900)
        if 'error' in R[key]:
            print(f'[bench] {key}: skipped ({R[key]["error"]})', flush=True)
    if 'kd' not in skip:
        print('[bench] kd share (real-width 3DGP D) ...', flush=True)
        R['kd'] = _kd_share(device, threads, batch)
    fast = R.get('eg3d_fast', {})
    if 'data' not in skip:
        print('[bench] data ...', flush=True)
        R['data'] = _data(workers=2, need_images_per_s=batch / fast['step_wall_s'] if 'step_wall_s' in fast else 1.0)
    R['total_s'] = time.time() - t_start
    R['loadavg_end'] = os.getloadavg()
    R['table'] = table(R)
    _print_table(R)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    import dnnlib
    with dnnlib.util.atomic_write(out, 'w') as f:
        json.dump(R, f, indent=2)
    print(f'[bench] wrote {out} ({R["total_s"]:.0f} s)')

def table(R: dict) -> list:
    """The results as rows dict(figure, value, baseline, ratio, note); ratio = value / baseline."""
    rows = []
    def row(figure, value, baseline, note):
        ratio = value / baseline if value is not None and baseline else None
        rows.append(dict(figure=figure, value=value, baseline=baseline, ratio=ratio, note=note))
    def step_rows(key, base_key, label, base_label):
        a, b = R.get(key, {}), R.get(base_key, {})
        for ph in (a.get('phases') or {}):
            row(f'{label} {ph} cpu s', a['phases'][ph]['cpu_s'], (b.get('phases') or {}).get(ph, {}).get('cpu_s'),
                f'vs {base_label}')
        for m in ('step_cpu_s', 'step_wall_s', 'peak_rss_mb', 'gpu_max_allocated_mb'):
            if m in a:
                row(f'{label} {m}', a[m], b.get(m), f'vs {base_label}')
    step_rows('eg3d_fast', 'eg3d_plain', 'EG3D fast', 'EG3D plain')
    if 'eg3d_plain_root' in R:
        step_rows('eg3d_fast', 'eg3d_plain_root', 'EG3D fast', '--root plain')
    step_rows('3dgp_fast', 'eg3d_fast', '3DGP fast', 'EG3D fast')
    if '3dgp_plain' in R:
        step_rows('3dgp_fast', '3dgp_plain', '3DGP fast', '3DGP plain')
    rr = R.get('render', {})
    for name, label in (('eg3d', 'EG3D'), ('3dgp', '3DGP'), ('3dgp_ray_grad', '3DGP rays need grad,')):
        for mode in ('train', 'eval'):
            k = f'{name}_rays_per_s_{mode}'
            if k + '_gathers' in rr:
                note = 'flag on vs off (grid_sample both: timing noise)' if name == '3dgp_ray_grad' else 'gathers vs grid_sample'
                row(f'{label} renderer rays/s {mode}', rr[k + '_gathers'], rr[k + '_grid_sample'], note)
    kd = R.get('kd', {})
    if 'kd_flop_share' in kd:
        row('D step GFLOP, KD on', kd['flops_d_step_with_kd'] / 1e9, kd['flops_d_step'] / 1e9,
            f'vs KD off: KD share {100 * kd["kd_flop_share"]:.3f}% (real widths, batch {kd["batch"]})')
    if 'kd_time_share' in kd:
        row('D step s, KD on', kd['sec_d_step_with_kd'], kd['sec_d_step'],
            f'vs KD off: KD share {100 * kd["kd_time_share"]:.2f}%')
    d = R.get('data', {})
    if 'loader_vs_need' in d:
        row('loader images/s', d['loader_vs_need'] * d['step_need_images_per_s'], d['step_need_images_per_s'],
            'vs EG3D fast step need')
        for tool in ('synthetic', 'convert'):
            row(f'dataset_tool {tool} images/s', d[f'{tool}_images_per_s'], None,
                f'{d[f"{tool}_cpu_ms_per_image"]:.1f} CPU ms/image, {d["workers"]} workers, {d["resolution"]} px')
    return rows

def _print_table(R: dict) -> None:
    print(f'\n{"figure":42s} {"value":>10s} {"baseline":>10s} {"ratio":>7s}  note')
    for r in R['table']:
        print(f'{r["figure"]:42s} {_fmt(r["value"]):>10s} {_fmt(r["baseline"]):>10s} {_fmt(r["ratio"]):>7s}  {r["note"]}')
    for k, v in R.items():
        if isinstance(v, dict) and 'error' in v:
            print(f'{k}: skipped: {v["error"]}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter
