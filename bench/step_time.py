"""Time one EG3D training iteration (Gmain, Greg, Dmain, Dreg separately) in the bench-baseline.md configuration.

Uses only the EG3D interface (TriPlaneGenerator, DualDiscriminator, StyleGAN2Loss constructor and
accumulate_gradients), so the same script runs against the official EG3D tree via --root.

\b
python bench/step_time.py                       # CPU, 2 threads, median of 4 after 1 warm-up
python bench/step_time.py --device=cuda --iters=10
"""

import json
import os
import sys
import time

import click
import numpy as np

#----------------------------------------------------------------------------

def frontal_cameras(batch: int, rnd: np.random.RandomState, radius: float = 2.7) -> np.ndarray:
    """FFHQ-like c25 labels: OpenCV cam2world on a sphere around (0, 0, 0.2) + normalised intrinsics."""
    out = []
    for _ in range(batch):
        yaw, pitch = rnd.uniform(-0.3, 0.3), rnd.uniform(-0.15, 0.15)
        pivot = np.array([0, 0, 0.2])
        origin = pivot + radius * np.array([np.sin(yaw) * np.cos(pitch), np.sin(pitch), np.cos(yaw) * np.cos(pitch)])
        forward = (pivot - origin) / np.linalg.norm(pivot - origin)
        right = -np.cross([0, 1, 0], forward); right /= np.linalg.norm(right)
        up = np.cross(forward, right); up /= np.linalg.norm(up)
        m = np.eye(4)
        m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, forward, origin
        K = np.array([[4.2647, 0, 0.5], [0, 4.2647, 0.5], [0, 0, 1]])
        out.append(np.concatenate([m.reshape(-1), K.reshape(-1)]))
    return np.stack(out).astype(np.float32)

def build(device, torch, dnnlib, res: int = 128, cbase: int = 4096, cmax: int = 64, depth: int = 24, nrr: int = 32,
          sr_module: str = 'training.superresolution.SuperresolutionHybrid2X'):
    """G, D, loss and the four phases (name, module, Adam, interval). The defaults are bench-baseline.md's tiny config;
    the FFHQ preset's rendering setup (ray bounds, box, camera) at any resolution, width, sample count (`depth` +
    `depth` importance), neural rendering resolution `nrr` and superresolution module."""
    rendering_kwargs = dict(
        image_resolution=res, disparity_space_sampling=False, clamp_mode='softplus', superresolution_module=sr_module,
        c_gen_conditioning_zero=False, gpc_reg_prob=0.5, c_scale=1.0, superresolution_noise_mode='none',
        density_reg=0.25, density_reg_p_dist=0.004, reg_type='l1', decoder_lr_mul=1.0, sr_antialias=True,
        depth_resolution=depth, depth_resolution_importance=depth, ray_start=2.25, ray_end=3.3, box_warp=1,
        avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0.2])
    G_kwargs = dict(class_name='training.triplane.TriPlaneGenerator', z_dim=512, w_dim=512, c_dim=25, img_resolution=res,
                    img_channels=3, mapping_kwargs=dnnlib.EasyDict(num_layers=2), channel_base=cbase, channel_max=cmax,
                    fused_modconv_default='inference_only', rendering_kwargs=rendering_kwargs, num_fp16_res=0,
                    conv_clamp=None, sr_num_fp16_res=4,
                    sr_kwargs=dnnlib.EasyDict(channel_base=cbase, channel_max=cmax, fused_modconv_default='inference_only'))
    D_kwargs = dict(class_name='training.dual_discriminator.DualDiscriminator', c_dim=25, img_resolution=res, img_channels=3,
                    channel_base=cbase, channel_max=cmax, block_kwargs=dnnlib.EasyDict(freeze_layers=0),
                    mapping_kwargs=dnnlib.EasyDict(), epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=4),
                    disc_c_noise=0, num_fp16_res=4, conv_clamp=256)
    G = dnnlib.util.construct_class_by_name(**G_kwargs).train().requires_grad_(False).to(device)
    D = dnnlib.util.construct_class_by_name(**D_kwargs).train().requires_grad_(False).to(device)
    from training.loss import StyleGAN2Loss
    loss = StyleGAN2Loss(device, G, D, r1_gamma=1, blur_init_sigma=10, blur_fade_kimg=200,
                         neural_rendering_resolution_initial=nrr, gpc_reg_prob=0.5, dual_discrimination=True,
                         filter_mode='antialiased')
    return G, D, loss, adam_phases(torch, G, D, G_reg_interval=4)

def adam_phases(torch, G, D, G_reg_interval) -> list:
    """The training loop's phases as (name, module, Adam, interval), lazy regularisation as in EG3D (D every 16);
    G_reg_interval None: one 'Gboth' phase (3DGP)."""
    phases = []
    for name, module, lr, interval in [('G', G, 0.0025, G_reg_interval), ('D', D, 0.002, 16)]:
        ratio = interval / (interval + 1) if interval else 1
        opt = torch.optim.Adam(module.parameters(), lr=lr * ratio, betas=(0.0, 0.99 ** ratio), eps=1e-8)
        if interval:
            phases += [(name + 'main', module, opt, 1), (name + 'reg', module, opt, interval)]
        else:
            phases += [(name + 'both', module, opt, 1)]
    return phases

def timed_phase(torch, loss, name, module, opt, interval, real_img, real_c, gen_z, gen_c, sync, extras={}):
    """One training-loop phase (zero_grad, accumulate_gradients, grad nan_to_num, Adam step): (wall s, CPU s)."""
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    opt.zero_grad(set_to_none=True)
    module.requires_grad_(True)
    loss.accumulate_gradients(phase=name, real_img=real_img, real_c=real_c, gen_z=gen_z, gen_c=gen_c,
                              gain=interval, cur_nimg=0, **extras)
    module.requires_grad_(False)
    for p in module.parameters():
        if p.grad is not None:
            torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
    opt.step()
    sync()
    return time.perf_counter() - t0, time.process_time() - c0  # CPU: all threads; less sensitive than wall time to a shared machine

def run_iteration(torch, loss, phases, real_img, real_c, batch, z_dim, rnd, device, sync):
    times, cpu = {}, {}
    for name, module, opt, interval in phases:
        gen_z = torch.randn([batch, z_dim], device=device)
        gen_c = torch.from_numpy(frontal_cameras(batch, rnd)).to(device)
        times[name], cpu[name] = timed_phase(torch, loss, name, module, opt, interval, real_img, real_c, gen_z, gen_c, sync)
    return times, cpu

#----------------------------------------------------------------------------

@click.command(help=__doc__)
@click.option('--iters', type=click.IntRange(min=1), default=4, show_default=True, help='Timed iterations (after warm-up)')
@click.option('--warmup', type=click.IntRange(min=0), default=1, show_default=True, help='Untimed iterations')
@click.option('--threads', type=click.IntRange(min=1), default=2, show_default=True, help='torch.set_num_threads')
@click.option('--device', default='cpu', show_default=True, help='cpu | cuda')
@click.option('--batch', type=click.IntRange(min=1), default=4, show_default=True)
@click.option('--root', default=None, help='Code base to time (default: this repository)')
@click.option('--json-out', default=None, help='Also write the JSON result here')
def main(iters, warmup, threads, device, batch, root, json_out):
    root = os.path.abspath(root or os.path.join(os.path.dirname(__file__), '..'))
    sys.path.insert(0, root)
    import torch
    import dnnlib
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == 'cuda' else (lambda: None)
    G, _D, loss, phases = build(device, torch, dnnlib)
    rnd = np.random.RandomState(0)
    real_img = torch.rand([batch, 3, 128, 128], device=device) * 2 - 1
    real_c = torch.from_numpy(frontal_cameras(batch, rnd)).to(device)

    for _ in range(warmup):
        run_iteration(torch, loss, phases, real_img, real_c, batch, G.z_dim, rnd, device, sync)
    runs = [run_iteration(torch, loss, phases, real_img, real_c, batch, G.z_dim, rnd, device, sync) for _ in range(iters)]
    names = [p[0] for p in phases]
    result = dict(root=root, device=str(device), threads=threads, batch=batch, iters=iters, torch=torch.__version__,
                  load_avg=os.getloadavg()[0], cpu_count=os.cpu_count())
    print(f'{"phase":<8} {"wall s":>8} {"cpu s":>8}   per-iteration wall s')
    for kind, idx in (('wall', 0), ('cpu', 1)):
        rows = [r[idx] for r in runs]
        result[f'median_{kind}_sec'] = {n: float(np.median([r[n] for r in rows])) for n in names}
        result[f'per_iter_{kind}_total_sec'] = [float(sum(r.values())) for r in rows]
        result[f'median_{kind}_total_sec'] = float(np.median(result[f'per_iter_{kind}_total_sec']))
    for n in names:
        print(f'{n:<8} {result["median_wall_sec"][n]:8.3f} {result["median_cpu_sec"][n]:8.3f}   '
              + ' '.join(f'{r[0][n]:<8.3f}' for r in runs))
    print(f'{"total":<8} {result["median_wall_total_sec"]:8.3f} {result["median_cpu_total_sec"]:8.3f}   '
          + ' '.join(f'{t:<8.3f}' for t in result['per_iter_wall_total_sec']))
    print(f'(load average {result["load_avg"]:.1f} on {result["cpu_count"]} CPUs: wall times are only comparable on an idle machine)')
    print(json.dumps(result))
    if json_out:
        with open(json_out, 'w') as f:
            json.dump(result, f, indent=2)

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
