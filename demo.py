"""End-to-end CPU demo: synthetic RGB-D set -> 3DGP training -> samples, depth maps, orbit video, mesh and metrics.

Examples:

\b
# What `make demo` runs (~11 min on 2 idle CPU cores); a re-run resumes and reuses finished outputs.
python demo.py --outdir=demo_out --kimg=6

\b
# Train longer: continues the previous run exactly (train.py --resume=auto) and redoes the outputs.
python demo.py --outdir=demo_out --kimg=10
"""

import contextlib
import glob
import json
import os
import re
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Tuple

import click
import numpy as np
import PIL.Image

import dnnlib

ROOT = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault('EG3D_TRUST_PICKLES', '1') # the demo only loads pickles that it trained itself
DEMO_DETECTOR = 'TinyDetector (metrics.metric_utils): fixed random-init 2-layer conv net, 64-d features, seed 0'

# Small-scale training setup shared with bench/study.py. Everything else is the preset's own value. KD is off because
# the synthetic set has no teacher embeddings (and no teacher weights are available offline).
COMMON_ARGS = ['--gpus=1', '--gamma=0.05', '--cbase=2048', '--cmax=64', '--mbstd-group=4', '--workers=1',
               '--metrics=none', '--mirror=0', '--depth-resolution=16', '--depth-resolution-importance=16',
               '--plugin=eg3d_ext.plugin']
CFG_ARGS = {
    '3dgp': lambda res: ['--kd-weight=0', f'--patch-res={res}', '--triplane-res=64'],
    # EG3D's own SR modules start at 128 px: render at half the image resolution and use the any-resolution 2X module.
    'eg3d-wide': lambda res: [f'--neural_rendering_resolution_initial={res // 2}',
                              '--sr-module=training.superresolution.SuperresolutionHybrid2XAnyRes'],
}

#----------------------------------------------------------------------------
# Data.

def prepare_data(data_dir: str, num_images: int, resolution: int, seed: int = 0) -> str:
    """The synthetic RGB-D zip (dataset_tool.py synthetic); an existing zip is reused if `check` finds no problem."""
    from eg3d_ext.datasets import check, synthetic
    path = os.path.join(data_dir, f'synthetic-{resolution}px-{num_images}-seed{seed}.zip')
    if os.path.isfile(path):
        summary, problems = check.check_dataset(path)
        if not problems and summary.get('num_images') == num_images:
            print(f'Reusing {path} ({num_images} images)')
            return path
        print(f'{path} is incomplete or invalid ({problems[:1]}); rebuilding it')
    os.makedirs(data_dir, exist_ok=True)
    synthetic.build_synthetic(path, num_images=num_images, resolution=resolution, seed=seed, workers=2, overwrite=True)
    return path

#----------------------------------------------------------------------------
# Training through train.py. `--resume=auto` continues the latest matching run in `outdir` exactly (weights, Adam,
# schedules, RNG and data order), so a re-run with a larger --kimg extends it and an interrupted run picks up at its
# newest checkpoint. <outdir>/progress.json lets a finished budget be reused without starting train.py at all.

TICK_BATCHES = 13 # a progress line every 13 batches (~0.1 kimg at batch 8); grids and checkpoints every 4 ticks

def train(outdir: str, cfg: str, data: str, kimg: float, resolution: int, batch: int = 8, seed: int = 0,
          extra: List[str] = (), desc: str = 'demo') -> Tuple[str, float]:
    """Train (or resume) until `kimg` thousand images have been seen; returns (newest snapshot pickle, kimg)."""
    import tqdm
    outdir, data = os.path.abspath(outdir), os.path.abspath(data) # train.py runs in the repository root
    os.makedirs(outdir, exist_ok=True)
    state_path = os.path.join(outdir, 'progress.json')
    args = [*COMMON_ARGS, *CFG_ARGS[cfg](resolution), *extra]
    key = dict(cfg=cfg, data=data, resolution=resolution, batch=batch, seed=seed, args=args)
    state = json.load(open(state_path)) if os.path.isfile(state_path) else {}
    if state.get('key') == key and state.get('kimg', 0) >= kimg - 1e-9 and os.path.isfile(state.get('pkl') or ''):
        print(f'Reusing {os.path.relpath(state["pkl"])} ({state["kimg"]:g} kimg >= {kimg:g})')
        return state['pkl'], state['kimg']
    per_tick = TICK_BATCHES * batch
    cmd = [sys.executable, os.path.join(ROOT, 'train.py'), f'--outdir={outdir}', f'--cfg={cfg}', f'--data={data}',
           f'--batch={batch}', f'--seed={seed}', f'--kimg={kimg:g}', f'--tick={(per_tick - 0.5) / 1000:g}', '--snap=4',
           '--grid=4x4', '--resume=auto', f'--desc={desc}', *args]
    print(f'Training {cfg} to {kimg:g} kimg (log: {outdir}/*/log.txt)')
    run_dir, lines = None, []
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env)
    bar = tqdm.tqdm(total=kimg, desc=f'train {cfg}', bar_format='{l_bar}{bar}| {n:.2f}/{total:g} kimg [{elapsed}<{remaining}]')
    try:
        for line in proc.stdout:
            lines = (lines + [line])[-200:]
            if line.startswith('Resuming'):
                bar.write(line.rstrip())
            m = re.match(r'Output directory:\s+(\S+)', line)
            run_dir = m.group(1) if m else run_dir
            m = re.match(r'tick\s+(\d+)\s', line)
            if m: # the loop prints kimg to 0.1; tick N ends after exactly batch + N * per_tick images
                bar.update(min((batch + int(m.group(1)) * per_tick) / 1000, kimg) - bar.n)
                for old in sorted(glob.glob(os.path.join(run_dir or outdir, 'network-snapshot-*.pkl')), key=os.path.getmtime)[:-1]:
                    os.remove(old) # exact resume uses checkpoint-*.pt; keep only the newest snapshot pickle
        proc.wait()
    finally:
        bar.close()
        if proc.poll() is None: # interrupted: stop train.py; its checkpoints let the next call continue
            proc.terminate()
            proc.wait()
    if proc.returncode != 0:
        raise click.ClickException(f'train.py failed (exit {proc.returncode}):\n' + ''.join(lines[-30:]))
    pkls = sorted(glob.glob(os.path.join(run_dir or outdir, 'network-snapshot-*.pkl')), key=os.path.getmtime)
    if not pkls:
        raise click.ClickException(f'train.py wrote no network snapshot in {run_dir or outdir}')
    write_json(state_path, dict(key=key, kimg=kimg, pkl=pkls[-1]))
    return pkls[-1], kimg

#----------------------------------------------------------------------------
# Metrics: the registered metric functions with CPU-sized sample counts; FID uses the demo detector.

def compute_metrics(pkl: str, data: str, num_fid: int = 512, num_depth: int = 128, num_nfs: int = 64,
                    nfs_resolution: int = 256) -> Dict[str, float]:
    import legacy
    import calc_metrics
    import dnnlib
    from dnnlib import registry
    registry.load_plugins(['eg3d_ext.plugin']) # the RGB-D loader that skips *_depth.png
    from metrics import camera_recovery, depth_error, frechet_inception_distance, metric_utils, non_flatness
    with open(pkl, 'rb') as f:
        snap = legacy.load_network_pkl(f)
    G = snap['G_ema'].eval().requires_grad_(False)
    if getattr(G, 'learns_camera', False):
        dataset_kwargs = calc_metrics.data_kwargs(data) # class labels; depth maps skipped
    else:
        dataset_kwargs = dnnlib.EasyDict(snap['training_set_kwargs']) # EG3D: its 25-d camera labels condition G
    dataset_kwargs.update(resolution=G.img_resolution, use_labels=G.c_dim != 0, xflip=False, max_size=None)
    opts = lambda: metric_utils.MetricOptions(G=G, dataset_kwargs=dataset_kwargs, device='cpu')
    name = os.path.splitext(metric_utils.DETECTOR_URLS.inception.split('/')[-1])[0]
    res = {}
    t0 = time.time()
    res.update(camera_recovery.compute_camera_w1(opts(), num_gen=4096))
    res['nfs'] = non_flatness.compute_nfs(opts(), num_gen=num_nfs, num_bins=64, cut_quantile=0.5, resolution=nfs_resolution)
    res.update(depth_error.compute_depth_err(opts(), num_gen=num_depth))
    metric_utils.register_detector(name, lambda: metric_utils.TinyDetector(feature_dim=64, seed=0))
    try:
        res['fid_demo'] = frechet_inception_distance.compute_fid(opts(), max_real=None, num_gen=num_fid)
    finally:
        metric_utils.register_detector(name, None)
    res['protocol'] = dict(camera_w1_num_gen=4096, nfs_num_gen=num_nfs, nfs_bins=64, nfs_resolution=nfs_resolution,
                           depth_err_num_gen=num_depth,
                           fid_demo_num_gen=num_fid, fid_demo_num_real='all', fid_demo_detector=DEMO_DETECTOR,
                           note='fid_demo is NOT the Inception FID: only comparable within this repository',
                           network=os.path.relpath(pkl), seconds=round(time.time() - t0, 1))
    return res

#----------------------------------------------------------------------------
# Output helpers (also used by bench/study.py).

def write_json(path: str, obj: Any) -> None:
    """Write `obj` as indented JSON atomically (a crash never leaves a half file)."""
    with dnnlib.util.atomic_write(path, 'wt') as f:
        json.dump(obj, f, indent=2)

def is_newer(path: str, than: str) -> bool:
    """True if `path` exists and is at least as new as `than` (an output made from that snapshot)."""
    return os.path.isfile(path) and os.path.getmtime(path) >= os.path.getmtime(than)

#----------------------------------------------------------------------------
# Exports through gen_samples.py / gen_videos.py.

def _save_png(img: PIL.Image.Image, path: str) -> None:
    with dnnlib.util.atomic_write(path, 'wb') as f:
        img.save(f, format='png')

def _tool(cmd, args: List[str], log: str) -> None:
    with open(log, 'a') as f, contextlib.redirect_stdout(f):
        cmd.main(args=args, standalone_mode=False)

def _grid(paths: List[str], cols: int, scale: int) -> PIL.Image.Image:
    import gen_videos
    imgs = [np.asarray(PIL.Image.open(p)) for p in paths]
    imgs = [(im >> 8).astype(np.uint8) if im.dtype == np.uint16 else im for im in imgs]
    imgs = np.stack([np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im for im in imgs])
    grid = PIL.Image.fromarray(gen_videos.tile(imgs, cols, len(imgs) // cols))
    return grid.resize((grid.width * scale, grid.height * scale), PIL.Image.NEAREST)

def export(pkl: str, out: str, camera: str = 'learned', num_seeds: int = 16, frames: int = 48, shape_res: int = 96,
           video: bool = True, mesh: bool = True) -> Dict[str, str]:
    """Sample grid + depth grid (from per-seed PNGs), a mesh of seed 0 and a 2x2 orbit video (RGB and depth)."""
    import gen_samples
    import gen_videos
    log, sdir = os.path.join(out, 'export.log'), os.path.join(out, 'samples')
    _tool(gen_samples.generate_images, ['--network', pkl, f'--seeds=0-{num_seeds - 1}', f'--camera={camera}', '--outdir', sdir, '--device=cpu'], log)
    if mesh:
        _tool(gen_samples.generate_images, ['--network', pkl, '--seeds=0', '--camera=fixed', '--shapes=true', f'--shape-res={shape_res}',
                                            '--shape-level=auto', '--outdir', os.path.join(out, 'mesh'), '--device=cpu'], log)
    if video:
        _tool(gen_videos.generate_videos, ['--network', pkl, '--seeds=0-3', '--grid=2x2', f'--frames={frames}', '--depth=true',
                                           '--fps=24', '--outdir', os.path.join(out, 'video'), '--device=cpu'], log)
    cols = int(np.ceil(np.sqrt(num_seeds)))
    seeds = [os.path.join(sdir, f'seed{s:04d}') for s in range(cols * (num_seeds // cols))]
    scale = max(1, 512 // (cols * PIL.Image.open(seeds[0] + '.png').width))
    _save_png(_grid([s + '.png' for s in seeds], cols, scale), os.path.join(out, 'samples.png'))
    _save_png(_grid([s + '_depth.png' for s in seeds], cols, scale), os.path.join(out, 'depth.png'))
    return dict(samples='samples.png', depth='depth.png', per_seed='samples/', video='video/orbit-seed0000-0003.mp4',
                depth_video='video/orbit-seed0000-0003_depth.mp4', mesh='mesh/seed0000.ply')

#----------------------------------------------------------------------------

def write_readme(out: str, files: Dict[str, str], metrics: Dict, info: Dict) -> None:
    m = metrics
    text = f"""# Demo outputs

3DGP (`--cfg=3dgp`) trained on CPU for {info['kimg']:g} kimg on the synthetic RGB-D set `{info['data']}`
({info['num_images']} images, {info['resolution']}x{info['resolution']}, 6 object classes, known cameras and depth).
Total wall time of the last `demo.py` call: {info['seconds'] / 60:.1f} min. Run: `{info['command']}`.

| file | what |
| --- | --- |
| [{files['samples']}]({files['samples']}) | 16 samples (seeds 0-15, cameras from the learned camera distribution), enlarged |
| [{files['depth']}]({files['depth']}) | their rendered depth maps (bright = near); 16-bit PNGs per seed in `{files['per_seed']}` |
| [{files['video']}]({files['video']}) | orbit video of seeds 0-3 ([depth]({files['depth_video']})) |
| [{files['mesh']}]({files['mesh']}) | marching-cubes mesh of seed 0 (density volume `.mrc` beside it) |
| [metrics.json](metrics.json) | the metrics below |
| `runs/` | training run (`log.txt`, `stats.jsonl`, snapshot grids `fakes*.png`, newest `network-snapshot-*.pkl`) |

| metric | value | meaning |
| --- | --- | --- |
| camera_w1 | {m['camera_w1']:.4f} | mean W1 distance of yaw, pitch (rad) and fov (deg->rad) of the learned cameras to the true ones (lower = better) |
| nfs | {m['nfs']:.2f} | non-flatness score of rendered depth, exp(entropy) of a 64-bin histogram (1 = flat) |
| depth_err | {m['depth_err']:.4f} | RMSE of scale/shift-aligned rendered depth vs. the true depth of the nearest real image (lower = better) |
| fid_demo | {m['fid_demo']:.2f} | Frechet distance in the features of a random-init demo network: **not the Inception FID** |

`fid_demo` uses {DEMO_DETECTOR}; it is only comparable between runs of this repository (bench/study.py).
Sample counts: {json.dumps({k: v for k, v in m['protocol'].items() if k.endswith('num_gen')})}.
Such a short CPU run shows the pipeline working end to end; it is far from converged.
"""
    with dnnlib.util.atomic_write(os.path.join(out, 'README.md'), 'wt') as f:
        f.write(text)

def setup_options(fn: Callable) -> Callable:
    """The data, training and metric options the demo shares with bench/study.py (same defaults, same meaning)."""
    options = [
        click.option('--data-dir', help='Where to build (or find) the synthetic set', metavar='DIR', default='demo_data', show_default=True),
        click.option('--num-images', help='Images in the synthetic set', type=click.IntRange(min=16), default=2000, show_default=True),
        click.option('--resolution', help='Image resolution', type=click.Choice(['32', '64']), default='32', show_default=True),
        click.option('--batch', help='Batch size', type=click.IntRange(min=4), default=8, show_default=True),
        click.option('--seed', help='Random seed (data and training)', type=int, default=0, show_default=True),
        click.option('--metric-scale', help='Multiplier for the metric sample counts (fid 512, depth 128, nfs 64)', type=click.FloatRange(min=0.01), default=1, show_default=True),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn

@click.command(help=__doc__)
@click.option('--outdir', help='Where to write the outputs', metavar='DIR', default='demo_out', show_default=True)
@click.option('--kimg', help='Training length in thousands of images', type=click.FloatRange(min=0, min_open=True), default=6, show_default=True)
@setup_options
@click.option('--frames', help='Orbit video length', type=click.IntRange(min=1), default=48, show_default=True)
@click.option('--shape-res', help='Density volume resolution for the mesh', type=click.IntRange(min=16), default=96, show_default=True)
def main(outdir, kimg, data_dir, num_images, resolution, batch, seed, frames, shape_res, metric_scale):
    try:
        run_demo(outdir, kimg, data_dir, num_images, int(resolution), batch, seed, frames, shape_res, metric_scale)
    except (OSError, ValueError) as err: # unwritable dirs, a full disk, bad data: one clear message
        raise click.ClickException(f'{type(err).__name__}: {err}')

def run_demo(outdir: str, kimg: float, data_dir: str, num_images: int, resolution: int, batch: int, seed: int,
             frames: int, shape_res: int, metric_scale: float) -> None:
    t0 = time.time()
    os.makedirs(outdir, exist_ok=True)
    print('[1/4] Synthetic RGB-D data set')
    data = prepare_data(data_dir, num_images, resolution, seed)
    print('[2/4] Training 3DGP on CPU')
    pkl, done = train(os.path.join(outdir, 'runs'), '3dgp', data, kimg, resolution, batch, seed)
    print('[3/4] Samples, depth maps, orbit video, mesh')
    mpath = os.path.join(outdir, 'metrics.json')
    files = dict(samples='samples.png', depth='depth.png', per_seed='samples/', video='video/orbit-seed0000-0003.mp4',
                 depth_video='video/orbit-seed0000-0003_depth.mp4', mesh='mesh/seed0000.ply')
    exports_fresh = all(is_newer(os.path.join(outdir, f), pkl) for f in files.values() if not f.endswith('/'))
    reused = exports_fresh and is_newer(mpath, pkl) # nothing to redo: keep README's wall time of the call that did the work
    if exports_fresh:
        print('Reusing exports (newer than the snapshot)')
    else:
        files = export(pkl, outdir, frames=frames, shape_res=shape_res)
    print('[4/4] Metrics (camera_w1, nfs, depth_err, fid_demo)')
    if is_newer(mpath, pkl):
        metrics = json.load(open(mpath))
        print('Reusing metrics.json (newer than the snapshot)')
    else:
        s = metric_scale
        metrics = compute_metrics(pkl, data, num_fid=max(int(512 * s), 8), num_depth=max(int(128 * s), 4), num_nfs=max(int(64 * s), 4),
                                  nfs_resolution=resolution) # nfs256's 256^2 depth renders would take minutes on CPU
        write_json(mpath, metrics)
    print(json.dumps({k: v for k, v in metrics.items() if k in ('camera_w1', 'nfs', 'depth_err', 'fid_demo')}))
    info = dict(kimg=done, data=os.path.relpath(data), num_images=num_images, resolution=resolution, seconds=time.time() - t0,
                command=' '.join(['python'] + [os.path.basename(sys.argv[0])] + sys.argv[1:]))
    if not reused or not os.path.isfile(os.path.join(outdir, 'README.md')):
        write_readme(outdir, files, metrics, info)
    print(f'Done in {(time.time() - t0) / 60:.1f} min; see {os.path.join(outdir, "README.md")}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
