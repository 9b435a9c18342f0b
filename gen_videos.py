"""Render orbit or yaw-sweep videos (RGB, optionally depth) of a grid of seeds from an EG3D or 3DGP network pickle."""

import os
from typing import List, Optional, Tuple

import click
import numpy as np
import torch

import gen_utils

#----------------------------------------------------------------------------

def tile(frames: np.ndarray, grid_w: int, grid_h: int) -> np.ndarray:
    """[W*H, h, w, C] -> [H*h, W*w, C], row-major over the grid."""
    n, h, w, ch = frames.shape
    assert n == grid_w * grid_h
    return frames.reshape(grid_h, grid_w, h, w, ch).transpose(0, 2, 1, 3, 4).reshape(grid_h * h, grid_w * w, ch)

def trajectory(kind: str, num_frames: int, yaw_range: Optional[float], pitch_range: float) -> Tuple[np.ndarray, np.ndarray]:
    """Yaw/pitch offsets from the frontal view, one pair per frame."""
    if kind == 'orbit':
        return gen_utils.orbit_trajectory(num_frames, 0.35 if yaw_range is None else yaw_range, pitch_range)
    return gen_utils.yaw_sweep_trajectory(num_frames, 1.0 if yaw_range is None else yaw_range)

class VideoWriter:
    """mp4 (libx264 via imageio-ffmpeg) written under a temporary name and renamed when complete."""
    def __init__(self, path: str, fps: int):
        import imageio
        self.path = path
        self.tmp_path = os.path.join(os.path.dirname(path) or '.', f'.{os.path.basename(path)}.tmp.mp4')
        self.writer = imageio.get_writer(self.tmp_path, mode='I', fps=fps, codec='libx264', bitrate='10M')

    def append(self, frame: np.ndarray) -> None:
        self.writer.append_data(frame)

    def close(self, ok: bool = True) -> None:
        self.writer.close()
        if ok:
            os.replace(self.tmp_path, self.path)
        elif os.path.exists(self.tmp_path):
            os.remove(self.tmp_path)

def render_video(G: torch.nn.Module, seeds: List[int], grid: Tuple[int, int], num_frames: int, kind: str,
                 yaw_range: Optional[float], pitch_range: float, fov: Optional[float], truncation_psi: float,
                 truncation_cutoff: int, class_idx: Optional[int], depth: bool, fps: int, stem: str,
                 device: torch.device) -> List[str]:
    """One video (plus a depth video) for len(seeds) == grid_w * grid_h cells; returns the written paths."""
    n = len(seeds)
    z = torch.from_numpy(np.stack([np.random.RandomState(s).randn(G.z_dim) for s in seeds])).to(torch.float32).to(device)
    c = torch.cat([gen_utils.conditioning(G, 1, class_idx, rng=np.random.RandomState(s), device=device) for s in seeds])
    with torch.no_grad():
        ws = gen_utils.mapping(G, z, c, truncation_psi, truncation_cutoff)
    near_far = gen_utils.depth_range(G)
    yaws, pitches = trajectory(kind, num_frames, yaw_range, pitch_range)
    paths = [stem + '.mp4'] + ([stem + '_depth.mp4'] if depth else [])
    writers = [VideoWriter(p, fps) for p in paths]
    ok = False
    try:
        for yaw, pitch in zip(yaws, pitches):
            cam = gen_utils.lookat_cameras(G, [yaw], [pitch], fov_deg=fov, device=device).repeat(n, 1)
            torch.manual_seed(0) # same ray jitter every frame: less flicker
            with torch.no_grad():
                out = gen_utils.generate(G, z, c, camera=cam, ws=ws, noise_mode='const')
            img = gen_utils.to_uint8(out['image'])
            writers[0].append(tile(img, *grid))
            if depth:
                d = gen_utils.depth_to_uint8_rgb(out['image_depth'], size=img.shape[1], near_far=near_far)
                writers[1].append(tile(d, *grid))
        ok = True
    finally:
        for w in writers:
            w.close(ok)
    return paths

#----------------------------------------------------------------------------

@click.command()
@click.option('--network', 'network_pkl', help='Network pickle filename or URL', required=True)
@click.option('--seeds', type=gen_utils.parse_range, help='Random seeds, grid_w*grid_h per video (e.g. 0-3)', required=True)
@click.option('--grid', type=gen_utils.parse_grid, help='Grid width x height', default='1x1', show_default=True)
@click.option('--frames', 'num_frames', type=click.IntRange(min=1), help='Frames per video', default=120, show_default=True)
@click.option('--trajectory', 'kind', type=click.Choice(['orbit', 'yaw-sweep']), default='orbit', show_default=True,
              help='orbit: EG3D camera loop; yaw-sweep: left to right at frontal pitch (3DGP "line")')
@click.option('--yaw-range', type=float, help='Yaw amplitude in radians  [default: 0.35 orbit, 1.0 yaw-sweep]')
@click.option('--pitch-range', type=float, help='Pitch amplitude of the orbit, radians', default=0.25, show_default=True)
@click.option('--fov', type=float, help='Field of view in degrees  [default: the generator\'s]')
@click.option('--trunc', 'truncation_psi', type=float, help='Truncation psi', default=1, show_default=True)
@click.option('--trunc-cutoff', 'truncation_cutoff', type=int, help='Truncation cutoff', default=14, show_default=True)
@click.option('--class', 'class_idx', type=int, help='Class label (3DGP class-conditional nets)')
@click.option('--depth', type=bool, help='Also write a depth video (<name>_depth.mp4, bright = near)', default=False, show_default=True)
@click.option('--fps', type=click.IntRange(min=1), help='Frames per second', default=30, show_default=True)
@click.option('--outdir', help='Output directory', type=str, required=True, metavar='DIR')
@click.option('--device', type=click.Choice(['auto', 'cuda', 'cpu']), default='auto', show_default=True)
def generate_videos(network_pkl, seeds, grid, num_frames, kind, yaw_range, pitch_range, fov, truncation_psi,
                    truncation_cutoff, class_idx, depth, fps, outdir, device):
    """Render camera-trajectory videos: one mp4 per group of grid_w*grid_h seeds, named
    <trajectory>-seed<first>-<last>.mp4.

    \b
    Examples:

    \b
    # 2x2 grid orbit of an EG3D pickle, with a depth video.
    python gen_videos.py --network=ffhq512-128.pkl --seeds=0-3 --grid=2x2 --trunc=0.7 --depth=true --outdir=out

    \b
    # Yaw sweep of a 3DGP pickle for class 207.
    python gen_videos.py --network=3dgp.pkl --seeds=0 --class=207 --trajectory=yaw-sweep --frames=64 --outdir=out
    """
    grid_w, grid_h = grid
    if len(seeds) % (grid_w * grid_h) != 0:
        raise click.ClickException(f'--seeds: {len(seeds)} seeds do not fill whole {grid_w}x{grid_h} grids')
    G, dev = gen_utils.cli_load_3d_generator(network_pkl, device)
    if class_idx is not None and not gen_utils.learns_camera(G):
        raise click.ClickException('--class is only for class-conditional 3DGP generators')
    try:
        gen_utils.conditioning(G, 1, class_idx, device=dev)
    except ValueError as err:
        raise click.ClickException(str(err))
    os.makedirs(outdir, exist_ok=True)
    per_video = grid_w * grid_h
    for lo in range(0, len(seeds), per_video):
        group = seeds[lo:lo + per_video]
        stem = os.path.join(outdir, f'{kind}-seed{group[0]:04d}-{group[-1]:04d}')
        print(f'Rendering {num_frames} frames for seeds {group} ...')
        paths = render_video(G, group, (grid_w, grid_h), num_frames, kind, yaw_range, pitch_range, fov,
                             truncation_psi, truncation_cutoff, class_idx, depth, fps, stem, dev)
        print('Wrote ' + ', '.join(paths))

#----------------------------------------------------------------------------

if __name__ == '__main__':
    generate_videos() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
