"""Benchmark suite: training step per phase, renderer rays/s, KD head share, data loading vs need, peak memory.

Every figure is reported with a baseline measured in the same run (plain vs fast path, EG3D vs 3DGP, KD off vs on,
loader vs the step's consumption). Step and renderer figures come from fresh worker processes (one per
configuration), so peak RSS and the process-global heap setting are per configuration.

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

# GPU configs (bench/gpu_check.sh): full widths at 256 px. EG3D: the ffhq preset's shape at 256 (4X SR, 48+48 samples,
# 64 px neural rendering); 3DGP: preset_3dgp defaults (cbase 32768, cmax 512, 512^2 tri-planes, 64x64 patches).
BIG = dict(eg3d256=dict(res=256, cbase=32768, cmax=512, depth=48, nrr=64))

def _build_eg3d256(device, torch, dnnlib, st):
    """EG3D at 256 px by adjusting bench/step_time.build's kwargs (one source of truth for everything else)."""
    import copy
    from training.dual_discriminator import DualDiscriminator
    from training.loss import StyleGAN2Loss
    from training.triplane import TriPlaneGenerator
    b = BIG['eg3d256']
    captured = {}
    orig = dnnlib.util.construct_class_by_name
    def capture(**kw): # record the kwargs step_time.build uses, build nothing heavy
        captured[kw['class_name']] = copy.deepcopy(kw)
        raise StopIteration
    dnnlib.util.construct_class_by_name = capture
    try:
        st.build(device, torch, dnnlib)
    except StopIteration:
        pass
    finally:
        dnnlib.util.construct_class_by_name = orig
    gk = captured['training.triplane.TriPlaneGenerator']
    gk.pop('class_name')
    gk.update(img_resolution=b['res'], channel_base=b['cbase'], channel_max=b['cmax'])
    gk['sr_kwargs'].update(channel_base=b['cbase'], channel_max=b['cmax'])
    gk['rendering_kwargs'].update(image_resolution=b['res'], depth_resolution=b['depth'],
        depth_resolution_importance=b['depth'], superresolution_module='training.superresolution.SuperresolutionHybrid4X')
    G = TriPlaneGenerator(**gk).train().requires_grad_(False).to(device)
    D = DualDiscriminator(c_dim=25, img_resolution=b['res'], img_channels=3, channel_base=b['cbase'],
        channel_max=b['cmax'], block_kwargs=dict(freeze_layers=0), mapping_kwargs={}, epilogue_kwargs=dict(
        mbstd_group_size=4), disc_c_noise=0, num_fp16_res=4, conv_clamp=256).train().requires_grad_(False).to(device)
    loss = StyleGAN2Loss(device, G, D, r1_gamma=1, blur_init_sigma=10, blur_fade_kimg=200,
        neural_rendering_resolution_initial=b['nrr'], gpc_reg_prob=0.5, dual_discrimination=True, filter_mode='antialiased')
    return G, loss, _adam_phases(torch, G, D, 4)

def _adam_phases(torch, G, D, G_reg_interval):
    phases = []
    for name, module, lr, interval in [('G', G, 0.0025, G_reg_interval), ('D', D, 0.002, 16)]:
        ratio = interval / (interval + 1) if interval else 1
        opt = torch.optim.Adam(module.parameters(), lr=lr * ratio, betas=(0.0, 0.99 ** ratio), eps=1e-8)
        if interval:
            phases += [(name + 'main', module, opt, 1), (name + 'reg', module, opt, interval)]
        else:
            phases += [(name + 'both', module, opt, 1)]
    return phases

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
    phases = _adam_phases(torch, G, D, None) # preset_3dgp: G_reg_interval None -> one G phase
    g = torch.Generator().manual_seed(0)
    extras = dict(depth=(torch.rand([batch, 1, res, res], generator=g) * 2 - 1).to(device),
                  embedding=torch.randn([batch, 2048], generator=g).to(device))
    real_c = torch.nn.functional.one_hot(torch.arange(batch) % c_dim, c_dim).float().to(device)
    return G, loss, phases, extras, real_c, (lambda b, rnd: real_c)

def _time_phases(torch, loss, phases, real_img, real_c, make_c, extras, batch, z_dim, device, iters, warmup):
    from step_time import timed_phase # bench/ is on sys.path in the worker (see run_worker)
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

def _render_rate(torch, G, device, iters, batch=4, res=32):
    """Rays/s of the EG3D renderer alone (training: fwd+bwd w.r.t. the planes; eval: fwd) at the step's settings."""
    from training.volumetric_rendering.renderer import ImportanceRenderer
    from training.volumetric_rendering.ray_sampler import RaySampler
    sys.path.insert(0, os.path.join(ROOT, 'bench'))
    from step_time import frontal_cameras
    c = torch.from_numpy(frontal_cameras(batch, np.random.RandomState(1))).to(device)
    ro, rd = RaySampler()(c[:, :16].view(-1, 4, 4), c[:, 16:].view(-1, 3, 3), res)
    planes = torch.randn([batch, 3, 32, 256, 256], device=device, requires_grad=True)
    rk = G.rendering_kwargs
    r = ImportanceRenderer()
    out = {}
    for name, train in (('train', True), ('eval', False)):
        def run():
            with torch.set_grad_enabled(train):
                rgb = r(planes, G.decoder, ro, rd, rk)[0]
                if train:
                    rgb.square().sum().backward()
        run()
        t0 = time.perf_counter()
        for _ in range(iters):
            run()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        out[f'rays_per_s_{name}'] = batch * res * res * iters / (time.perf_counter() - t0)
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
    sys.path.insert(0, os.path.join(root, 'bench'))
    import step_time as st
    if dev.type == 'cuda':
        torch.backends.cudnn.benchmark = True # as the training loop
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
    if cfg == 'eg3d' and root == ROOT:
        res.update(_render_rate(torch, G, dev, max(iters, 2)))
    return res

def memory_estimate(batch: int = 2, target_batch: int = 16, threads: int = 2) -> dict:
    """3DGP 256 (preset widths): bytes of the tensors each phase saves for backward (measured on CPU at `batch`,
    parameters excluded, each storage once), extrapolated linearly to `target_batch` + weights/grads/Adam/G_ema."""
    sys.path.insert(0, ROOT)
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

def _kd_share(device: str, threads: int, iters: int) -> dict:
    import torch
    torch.set_num_threads(threads)
    try:
        from bench.kd_share import time_d_step
        from eg3d_ext.discriminator import Discriminator
    except ImportError as e:
        return dict(skipped=f'eg3d_ext/bench.kd_share not importable: {e}')
    torch.manual_seed(0)
    dev = torch.device(device)
    batch, c_dim = 4, 1000 # ImageNet classes; widths reduced from 32768/512 so the CPU run stays short
    D = Discriminator(c_dim=c_dim, img_resolution=256, patch_resolution=64, channel_base=16384, channel_max=256,
                      kd_dim=2048).to(dev).requires_grad_(True)
    x = torch.randn(batch, 4, 64, 64, device=dev)
    c = torch.nn.functional.one_hot(torch.randint(c_dim, [batch]), c_dim).float().to(dev)
    pp = torch.tensor([[0.5, 0.25, 0.25]], device=dev).repeat(batch, 1)
    emb = torch.randn(batch, 2048, device=dev)
    t_off = t_on = 0.0
    for _ in range(2): # alternate to cancel drift; process CPU time (time_d_step's call incl. its warm-up step)
        for kd in (False, True):
            c0 = time.process_time()
            time_d_step(D, x, c, pp, emb, kd, iters)
            dt = (time.process_time() - c0) / (iters + 1)
            t_off, t_on = (t_off + dt, t_on) if not kd else (t_off, t_on + dt)
    head = sum(p.numel() for n, p in D.named_parameters() if '.kd_' in n)
    return dict(sec_d_step_kd_off=t_off / 2, sec_d_step_kd_on=t_on / 2, kd_time_share=(t_on - t_off) / t_on,
                kd_param_share=head / sum(p.numel() for p in D.parameters()), batch=batch, channel_base=16384,
                channel_max=256)

def _data(workers: int, need_images_per_s: float) -> dict:
    try:
        from bench.data_throughput import bench as data_bench
        res = data_bench(num_synthetic=64, num_convert=8, resolution=128, workers=workers)
    except ImportError as e:
        return dict(skipped=f'bench.data_throughput not importable: {e}')
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
@click.option('--skip', default='', help='Comma list of sections to skip: eg3d,3dgp,kd,data')
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
    if root:
        runs += [('eg3d', 'plain', os.path.abspath(root))]
    for cfg, mode, r in runs:
        key = f'{cfg}_{mode}' + ('' if r == ROOT else '_root')
        print(f'[bench] {key} ...', flush=True)
        R[key] = _spawn([cfg, mode, '--worker-root', r, *common], timeout=900)
        if 'error' in R[key]:
            print(f'[bench] {key}: skipped ({R[key]["error"]})', flush=True)
    if 'kd' not in skip:
        print('[bench] kd share ...', flush=True)
        R['kd'] = _kd_share(device, threads, max(iters, 2))
    fast = R.get('eg3d_fast', {})
    if 'data' not in skip:
        print('[bench] data loading ...', flush=True)
        R['data'] = _data(workers=2, need_images_per_s=batch / fast['step_wall_s'] if 'step_wall_s' in fast else 1.0)
    R['total_s'] = time.time() - t_start
    R['loadavg_end'] = os.getloadavg()
    _print_table(R)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    import dnnlib
    with dnnlib.util.atomic_write(out, 'w') as f:
        json.dump(R, f, indent=2)
    print(f'[bench] wrote {out} ({R["total_s"]:.0f} s)')

def _print_table(R: dict) -> None:
    rows = [] # (figure, value, baseline, ratio, note)
    def ratio(a, b):
        return a / b if a is not None and b else None
    def step_rows(key, base_key, label, base_label):
        a, b = R.get(key, {}), R.get(base_key, {})
        for ph in (a.get('phases') or {}):
            av, bv = a['phases'][ph]['cpu_s'], (b.get('phases') or {}).get(ph, {}).get('cpu_s')
            rows.append((f'{label} {ph} cpu s', av, bv, ratio(av, bv), f'vs {base_label}'))
        for m in ('step_cpu_s', 'step_wall_s', 'peak_rss_mb', 'gpu_max_allocated_mb'):
            if m in a:
                rows.append((f'{label} {m}', a[m], b.get(m), ratio(a[m], b.get(m)), f'vs {base_label}'))
    step_rows('eg3d_fast', 'eg3d_plain', 'EG3D fast', 'EG3D plain')
    if 'eg3d_plain_root' in R:
        step_rows('eg3d_fast', 'eg3d_plain_root', 'EG3D fast', '--root plain')
    step_rows('3dgp_fast', 'eg3d_fast', '3DGP fast', 'EG3D fast')
    if '3dgp_plain' in R:
        step_rows('3dgp_fast', '3dgp_plain', '3DGP fast', '3DGP plain')
    for k in ('rays_per_s_train', 'rays_per_s_eval'):
        a, b = R.get('eg3d_fast', {}).get(k), R.get('eg3d_plain', {}).get(k)
        rows.append((f'renderer {k}', a, b, ratio(a, b), 'fast vs plain'))
    kd = R.get('kd', {})
    if 'kd_time_share' in kd:
        rows.append(('D step KD on s', kd['sec_d_step_kd_on'], kd['sec_d_step_kd_off'],
                     ratio(kd['sec_d_step_kd_on'], kd['sec_d_step_kd_off']), f'KD share {100 * kd["kd_time_share"]:.2f}%'))
    d = R.get('data', {})
    if 'loader_vs_need' in d:
        best = d['loader_vs_need'] * d['step_need_images_per_s']
        rows.append(('loader images/s', best, d['step_need_images_per_s'], d['loader_vs_need'], 'vs EG3D fast step need'))
    print(f'\n{"figure":34s} {"value":>10s} {"baseline":>10s} {"ratio":>7s}  note')
    for name, v, b, r, note in rows:
        print(f'{name:34s} {_fmt(v):>10s} {_fmt(b):>10s} {_fmt(r):>7s}  {note}')
    for k, v in R.items():
        if isinstance(v, dict) and ('error' in v or 'skipped' in v):
            print(f'{k}: skipped: {v.get("error") or v.get("skipped")}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter
