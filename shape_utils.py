"""Shapes from density volumes: a generator's shape export, marching cubes (scikit-image), PLY and MRC writers/readers,
and an .mrc -> .ply CLI."""

import os
import struct
from typing import TYPE_CHECKING, Optional, Sequence, Tuple

import click
import numpy as np

import dnnlib

if TYPE_CHECKING:
    import torch

#----------------------------------------------------------------------------
# Meshes.

def extract_mesh(volume: np.ndarray, level: float, voxel_size: float = 1.0,
                 origin: Sequence[float] = (0, 0, 0)) -> Tuple[np.ndarray, np.ndarray]:
    """Marching cubes on a volume indexed [x, y, z] -> (vertices [V,3] float32 in world units, faces [F,3] int32).
    Raises ValueError when the iso-level does not cross the volume (no surface)."""
    import skimage.measure
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3 or min(volume.shape) < 2:
        raise ValueError(f'extract_mesh() needs a 3D volume of at least 2^3 voxels, got shape {volume.shape}')
    lo, hi = float(volume.min()), float(volume.max())
    if not lo < level < hi:
        raise ValueError(f'Iso-level {level} is outside the volume range [{lo:.4g}, {hi:.4g}]: no surface')
    verts, faces, _normals, _values = skimage.measure.marching_cubes(volume, level=level, spacing=(voxel_size,) * 3)
    verts = verts + np.asarray(origin, dtype=np.float64)[None]
    return verts.astype(np.float32), faces.astype(np.int32)

def write_ply(path: str, verts: np.ndarray, faces: np.ndarray) -> None:
    """Binary little-endian PLY: vertex x,y,z float32; face vertex_indices (uchar count, int32 indices)."""
    verts = np.ascontiguousarray(verts, dtype='<f4').reshape(-1, 3)
    faces = np.asarray(faces, dtype='<i4').reshape(-1, 3)
    header = ('ply\nformat binary_little_endian 1.0\n'
              f'element vertex {len(verts)}\nproperty float x\nproperty float y\nproperty float z\n'
              f'element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n')
    face_rec = np.empty(len(faces), dtype=[('n', 'u1'), ('idx', '<i4', (3,))])
    face_rec['n'], face_rec['idx'] = 3, faces
    with dnnlib.util.atomic_write(path, 'wb') as f:
        f.write(header.encode('ascii'))
        f.write(verts.tobytes())
        f.write(face_rec.tobytes())

def read_ply(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Read back what write_ply writes (binary little-endian, float xyz, triangle faces)."""
    with open(path, 'rb') as f:
        data = f.read()
    end = data.index(b'end_header\n') + len(b'end_header\n')
    header = data[:end].decode('ascii').split('\n')
    if header[0] != 'ply' or 'format binary_little_endian 1.0' not in header:
        raise ValueError(f'{path}: not a binary little-endian PLY file')
    counts = {line.split()[1]: int(line.split()[2]) for line in header if line.startswith('element')}
    nv, nf = counts.get('vertex', 0), counts.get('face', 0)
    verts = np.frombuffer(data, dtype='<f4', count=nv * 3, offset=end).reshape(nv, 3)
    faces = np.frombuffer(data, dtype=[('n', 'u1'), ('idx', '<i4', (3,))], count=nf, offset=end + nv * 12)
    return verts.copy(), faces['idx'].copy()

def export_shape(G: 'torch.nn.Module', ws: 'torch.Tensor', resolution: int, level: Optional[float], stem: str) -> None:
    """Density volume of one latent (G, ws [1, num_ws, w_dim]) -> <stem>.mrc, then a marching-cubes mesh <stem>.ply at
    `level` (None: median density of the volume's interior). Raises ValueError when the level crosses no surface
    (the .mrc is written all the same)."""
    import gen_utils # imports torch: only here, so that the .mrc -> .ply CLI starts without it
    volume, voxel_size, origin = gen_utils.sample_density_volume(G, ws, resolution)
    pad = max(int(30 * resolution / 256), 1) # EG3D clears a border so that meshes close at the cube faces
    if level is None:
        level = float(np.median(volume[pad:-pad, pad:-pad, pad:-pad]))
    volume[:pad], volume[-pad:] = -1000, -1000
    volume[:, :pad], volume[:, -pad:] = -1000, -1000
    volume[:, :, :pad], volume[:, :, -pad:] = -1000, -1000
    write_mrc(stem + '.mrc', volume, voxel_size=voxel_size)
    verts, faces = extract_mesh(volume, level, voxel_size, (origin,) * 3)
    write_ply(stem + '.ply', verts, faces)

def convert_sdf_samples_to_ply(volume: np.ndarray, voxel_grid_origin: Sequence[float], voxel_size: float,
                               ply_filename_out: str, offset: Optional[np.ndarray] = None,
                               scale: Optional[float] = None, level: float = 0.0) -> None:
    """EG3D/DeepSDF API: marching cubes at `level`, shift by the grid origin, optional /scale and -offset, write PLY."""
    verts, faces = extract_mesh(volume, level, voxel_size, voxel_grid_origin)
    if scale is not None:
        verts = verts / scale
    if offset is not None:
        verts = verts - offset
    write_ply(ply_filename_out, verts, faces)

#----------------------------------------------------------------------------
# MRC2014 volumes (float32, mode 2) without the mrcfile dependency; opens in ChimeraX and mrcfile.

def write_mrc(path: str, volume: np.ndarray, voxel_size: float = 1.0) -> None:
    """Write a volume indexed [x, y, z] (MRC stores x fastest, i.e. a C-order [z, y, x] array)."""
    data = np.ascontiguousarray(np.transpose(np.asarray(volume, dtype=np.float32), (2, 1, 0)), dtype='<f4')
    nz, ny, nx = data.shape
    header = bytearray(1024)
    struct.pack_into('<3i', header, 0, nx, ny, nz)
    struct.pack_into('<i', header, 12, 2)                                   # mode 2 = float32
    struct.pack_into('<3i', header, 28, nx, ny, nz)                         # mx, my, mz (grid sampling)
    struct.pack_into('<3f', header, 40, nx * voxel_size, ny * voxel_size, nz * voxel_size) # cell lengths
    struct.pack_into('<3f', header, 52, 90, 90, 90)                         # cell angles
    struct.pack_into('<3i', header, 64, 1, 2, 3)                            # axis order: columns x, rows y, sections z
    struct.pack_into('<3f', header, 76, float(data.min()), float(data.max()), float(data.mean()))
    struct.pack_into('<i', header, 88, 1)                                   # space group 1 = single volume
    struct.pack_into('<i', header, 108, 20140)                              # MRC2014 version
    header[208:212] = b'MAP '
    header[212:216] = bytes([0x44, 0x44, 0, 0])                            # little-endian machine stamp
    struct.pack_into('<f', header, 216, float(data.std()))
    with dnnlib.util.atomic_write(path, 'wb') as f:
        f.write(bytes(header))
        f.write(data.tobytes())

def read_mrc(path: str) -> np.ndarray:
    """Read a float32 MRC file into an array indexed [z, y, x] (as mrcfile's .data)."""
    with open(path, 'rb') as f:
        header = f.read(1024)
        if len(header) < 1024 or header[208:212] != b'MAP ':
            raise ValueError(f'{path}: not an MRC2014 file')
        nx, ny, nz, mode = struct.unpack_from('<4i', header, 0)
        if mode != 2:
            raise ValueError(f'{path}: MRC mode {mode} is not supported (only 2 = float32)')
        f.seek(1024 + struct.unpack_from('<i', header, 92)[0]) # skip the extended header
        data = np.frombuffer(f.read(nx * ny * nz * 4), dtype='<f4')
    if data.size != nx * ny * nz:
        raise ValueError(f'{path}: truncated MRC file')
    return data.reshape(nz, ny, nx).copy()

def convert_mrc(input_filename: str, output_filename: str, isosurface_level: float = 1) -> None:
    """EG3D API: an .mrc density volume -> a .ply mesh at the iso-level (unit voxels, origin 0)."""
    volume = np.transpose(read_mrc(input_filename), (2, 1, 0))
    convert_sdf_samples_to_ply(volume, [0, 0, 0], 1, output_filename, level=isosurface_level)

#----------------------------------------------------------------------------

@click.command()
@click.argument('fname', type=click.Path(exists=True))
@click.option('--level', type=float, help='Iso-surface level for the mesh', default=10, show_default=True)
def convert_main(fname: str, level: float):
    """Convert an .mrc volume, or every .mrc in a folder, to a .ply mesh beside it.

    Example: python shape_utils.py out/seed0000.mrc --level=10
    """
    if os.path.isdir(fname):
        inputs = sorted(os.path.join(fname, f) for f in os.listdir(fname) if f.endswith('.mrc'))
    elif fname.endswith('.mrc'):
        inputs = [fname]
    else:
        raise click.ClickException(f'{fname}: expected an .mrc file or a folder of them')
    for path in inputs:
        out = path[:-4] + '.ply'
        try:
            convert_mrc(path, out, isosurface_level=level)
        except ValueError as err:
            raise click.ClickException(f'{path}: {err}')
        print(f'{path} -> {out}')

#----------------------------------------------------------------------------

if __name__ == '__main__':
    convert_main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
