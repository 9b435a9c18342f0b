"""Generate images, depth maps and shapes (.mrc density volumes, .ply meshes) from an EG3D or 3DGP network pickle."""

import io
import os
from typing import List, Optional

import click
import numpy as np
import PIL.Image
import torch

import dnnlib
import gen_utils
import shape_utils

#----------------------------------------------------------------------------

def save_png(path: str, array: np.ndarray) -> None:
    """Atomically write an [H,W,3] uint8 or [H,W] uint16 array as PNG (16-bit greyscale for uint16)."""
    buf = io.BytesIO()
    PIL.Image.fromarray(array).save(buf, format='png')
    with dnnlib.util.atomic_write(path, 'wb') as f:
        f.write(buf.getvalue())

def parse_level(s: str) -> Optional[float]:
    """'auto' -> None (median density of the volume's interior), else a float iso-level."""
    if str(s).lower() == 'auto':
        return None
    try:
        return float(s)
    except ValueError:
        raise click.BadParameter(f'{s!r} is neither a number nor "auto"')

def choose_camera(G: torch.nn.Module, mode: str, z: torch.Tensor, c: torch.Tensor, seed: int, yaw: float,
                  pitch: float, fov: Optional[float]) -> torch.Tensor:
    """Render camera c25 [1,25] for one seed: fixed orbit angles, a prior sample, or the learned camera posterior."""
    if mode == 'fixed':
        return gen_utils.lookat_cameras(G, [yaw], [pitch], fov_deg=fov, device=z.device)
    torch.manual_seed(seed)
    if gen_utils.learns_camera(G):
        return gen_utils.sample_cameras(G, z, c, camera_mode=mode)
    if mode == 'learned':
        raise click.ClickException('--camera=learned needs a generator that learns its cameras (3DGP); '
                                   'this one is EG3D: use --camera=fixed or --camera=prior')
    return gen_utils.prior_cameras(G, 1, np.random.RandomState(seed), device=z.device)

#----------------------------------------------------------------------------

@click.command()
@click.option('--network', 'network_pkl', help='Network pickle filename or URL', required=True)
@click.option('--seeds', type=gen_utils.parse_range, help='List of random seeds (e.g. 0,1,4-6)', required=True)
@click.option('--trunc', 'truncation_psi', type=float, help='Truncation psi', default=1, show_default=True)
@click.option('--trunc-cutoff', 'truncation_cutoff', type=int, help='Truncation cutoff', default=14, show_default=True)
@click.option('--class', 'class_idx', type=int, help='Class label (3DGP class-conditional nets)')
@click.option('--camera', type=click.Choice(['fixed', 'prior', 'learned']), default='fixed', show_default=True,
              help='fixed: --yaw/--pitch/--fov orbit camera; prior: a camera-prior sample; learned: the 3DGP camera generator')
@click.option('--yaw', type=float, help='Yaw offset from the frontal view, radians (--camera=fixed)', default=0, show_default=True)
@click.option('--pitch', type=float, help='Pitch offset from the frontal view, radians (--camera=fixed)', default=0, show_default=True)
@click.option('--fov', type=float, help='Field of view in degrees (--camera=fixed)  [default: the generator\'s]')
@click.option('--outdir', help='Where to save the output files', type=str, required=True, metavar='DIR')
@click.option('--shapes', type=bool, help='Also export the density volume (.mrc) and a mesh (.ply)', default=False, show_default=True)
@click.option('--shape-res', type=click.IntRange(min=8), help='Density volume resolution', default=512, show_default=True)
@click.option('--shape-level', type=str, help='Mesh iso-level on raw density, or "auto"', default='10', show_default=True)
@click.option('--device', type=click.Choice(['auto', 'cuda', 'cpu']), default='auto', show_default=True)
def generate_images(network_pkl: str, seeds: List[int], truncation_psi: float, truncation_cutoff: int,
                    class_idx: Optional[int], camera: str, yaw: float, pitch: float, fov: Optional[float], outdir: str,
                    shapes: bool, shape_res: int, shape_level: str, device: str):
    """Generate images (seed<NNNN>.png), 16-bit depth maps (seed<NNNN>_depth.png, bright = near) and optionally
    shapes (seed<NNNN>.mrc, seed<NNNN>.ply) with EG3D or 3DGP generators.

    \b
    Examples:

    \b
    # EG3D pickle, frontal view, truncation 0.7, plus meshes.
    python gen_samples.py --network=ffhq512-128.pkl --seeds=0-3 --trunc=0.7 --outdir=out --shapes=true

    \b
    # 3DGP pickle, class 207, cameras from the learned camera distribution.
    python gen_samples.py --network=3dgp.pkl --seeds=0-7 --class=207 --camera=learned --outdir=out
    """
    level = parse_level(shape_level)
    G, dev = gen_utils.cli_load_3d_generator(network_pkl, device)
    os.makedirs(outdir, exist_ok=True)

    for seed_idx, seed in enumerate(seeds):
        print(f'Generating image for seed {seed} ({seed_idx + 1}/{len(seeds)}) ...')
        rng = np.random.RandomState(seed)
        z = torch.from_numpy(rng.randn(1, G.z_dim)).to(torch.float32).to(dev)
        try:
            c = gen_utils.conditioning(G, 1, class_idx, rng=rng, device=dev)
        except ValueError as err:
            raise click.ClickException(str(err))
        cam = choose_camera(G, camera, z, c, seed, yaw, pitch, fov)
        with torch.no_grad():
            ws = gen_utils.mapping(G, z, c, truncation_psi, truncation_cutoff)
            torch.manual_seed(seed) # the renderer jitters its ray samples
            out = gen_utils.generate(G, z, c, camera=cam, ws=ws, noise_mode='const')
        stem = os.path.join(outdir, f'seed{seed:04d}')
        save_png(stem + '.png', gen_utils.to_uint8(out['image'])[0])
        if 'image_depth' in out:
            save_png(stem + '_depth.png', gen_utils.depth_to_uint16(out['image_depth'])[0])
        if shapes:
            try:
                with torch.no_grad():
                    shape_utils.export_shape(G, ws, shape_res, level, stem)
            except ValueError as err:
                print(f'  no mesh for {os.path.basename(stem)}: {err} (try --shape-level=auto)')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    generate_images() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
