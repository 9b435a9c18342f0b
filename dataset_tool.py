"""Build, extend and check EG3D-compatible RGB-D dataset zips (images, depth maps, labels, teacher embeddings).

Examples:

\b
# ImageNet-style class-per-folder tree -> 256px zip with class labels, Depth Anything V2 depth, ResNet-50 embeddings
python dataset_tool.py convert --source ~/imagenet/train --dest ~/datasets/imagenet-256.zip \\
    --transform=center-crop --resolution=256 --depth=depth-anything --depth-weights ~/weights/da2-small \\
    --embeddings=resnet50 --weights ~/weights/resnet50.safetensors --workers=8

\b
# Plain EG3D conversion (folder + dataset.json with 25-float camera labels), no depth
python dataset_tool.py convert --source ~/ffhq-raw --dest ~/datasets/ffhq-512.zip --resolution=512

\b
# Add depth or embeddings to an existing zip (images are copied byte for byte; rewritten atomically)
python dataset_tool.py add-depth ~/datasets/ffhq-512.zip --depth=depth-anything-metric --depth-weights ~/w/da2-metric
python dataset_tool.py add-embeddings ~/datasets/ffhq-512.zip --embeddings=resnet50 --weights ~/w/resnet50.safetensors

\b
# Synthetic RGB-D set with known cameras (10k images at 64px), then validate it
python dataset_tool.py synthetic --dest ~/datasets/synthetic-64.zip
python dataset_tool.py check ~/datasets/synthetic-64.zip
"""

import re
import sys
from typing import Optional

import click

import dnnlib
from eg3d_ext.datasets import check as check_mod
from eg3d_ext.datasets import convert as convert_mod
from eg3d_ext.datasets import depth_estimators, synthetic # depth_estimators: registers the built-in estimators

#----------------------------------------------------------------------------

def parse_resolution(_ctx, _param, value: Optional[str]) -> Optional[int]:
    """'256', '256x256' or '256,256' -> 256 (output must be square)."""
    if value is None:
        return None
    m = re.fullmatch(r'\s*(\d+)\s*(?:[x,]\s*(\d+)\s*)?', value)
    if not m:
        raise click.BadParameter(f'expected N, NxN or N,N, got {value!r}')
    w, h = int(m.group(1)), int(m.group(2) or m.group(1))
    if w != h or w < 4 or w & (w - 1):
        raise click.BadParameter(f'resolution must be square and a power of two, got {w}x{h}')
    return w

def _depth_choices() -> list:
    try:
        dnnlib.registry.load_plugins()
    except ImportError as err: # a broken third-party plugin must not disable the built-in estimators
        print(f'Warning: {err}', file=sys.stderr)
    return ['none'] + dnnlib.registry.names('depth_estimator')

def _run(fn, *args, **kwargs):
    """Turn expected failures (bad input, missing weights, full disk) into one clear CLI error."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, OSError, ImportError, KeyError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise click.ClickException(f'{type(err).__name__}: {msg}') from None

def _print_result(r: dict) -> None:
    print(f'Wrote {r["num_images"]} images to {r["dest"]}')
    for note, n in sorted(r.get('notes', {}).items()):
        print(f'  converted {n} {note} image(s) to RGB')
    for msg in r.get('skipped', []):
        print(f'  skipped: {msg}')

#----------------------------------------------------------------------------

@click.group()
def main():
    """EG3D/3DGP dataset tool: convert, add-depth, add-embeddings, synthetic, check."""

depth_opt = click.option('--depth', help='Depth source: none, file (<stem>_depth.png beside images) or an estimator', metavar='NAME', default='none', show_default=True)
depth_weights_opt = click.option('--depth-weights', help='Local folder with the depth model (config.json + weights)', metavar='DIR')
emb_opt = click.option('--embeddings', help='Teacher embeddings: none or a timm model name (e.g. resnet50)', metavar='MODEL', default='none', show_default=True)
weights_opt = click.option('--weights', help='Local weights of the --embeddings model (.safetensors/.pth)', metavar='FILE')
device_opt = click.option('--device', help='Device for depth / teacher models', default='cpu', show_default=True)
batch_opt = click.option('--batch', 'batch_size', help='Batch size for depth / teacher models', type=click.IntRange(min=1), default=16, show_default=True)

def _check_depth_name(depth: str, allow_file: bool = True) -> None:
    valid = _depth_choices() + (['file'] if allow_file else [])
    if depth not in valid:
        raise click.BadParameter(f'unknown depth source {depth!r}; valid: {", ".join(sorted(set(valid)))}', param_hint='--depth')

@main.command()
@click.option('--source', help='Image folder, class-per-folder tree, zip or EG3D zip', metavar='PATH', required=True)
@click.option('--dest', help='Output zip', metavar='ZIP', required=True)
@click.option('--max-images', help='Maximum number of images to output', type=click.IntRange(min=1))
@click.option('--transform', help='Input crop/resize mode', type=click.Choice(['center-crop', 'center-crop-wide']))
@click.option('--resolution', help='Output resolution (e.g. 256 or 256x256)', metavar='WxH', callback=parse_resolution)
@click.option('--labels', help='Where labels come from (auto: dataset.json, else class folders)', type=click.Choice(['auto', 'json', 'folders', 'none']), default='auto', show_default=True)
@depth_opt
@depth_weights_opt
@emb_opt
@weights_opt
@click.option('--workers', help='Decoding processes', type=click.IntRange(min=1), default=1, show_default=True)
@device_opt
@batch_opt
@click.option('--skip-bad', help='Skip unreadable / unsupported images instead of stopping', is_flag=True)
@click.option('--overwrite', help='Replace an existing output', is_flag=True)
def convert(source, dest, max_images, transform, resolution, labels, depth, depth_weights, embeddings, weights, workers, device, batch_size, skip_bad, overwrite):
    """Convert images (+ depth, labels, embeddings) into an EG3D/RGB-D zip."""
    _check_depth_name(depth)
    if transform and resolution is None:
        raise click.BadParameter('--transform needs --resolution', param_hint='--resolution')
    r = _run(convert_mod.convert_dataset, source, dest, max_images=max_images, transform=transform, resolution=resolution,
             depth=depth, depth_weights=depth_weights, embeddings=embeddings, weights=weights, workers=workers,
             overwrite=overwrite, labels=labels, device=device, batch_size=batch_size, skip_bad=skip_bad)
    _print_result(r)

@main.command('add-depth')
@click.argument('zip_path', metavar='ZIP')
@click.option('--dest', help='Write here instead of rewriting ZIP in place', metavar='ZIP')
@click.option('--depth', help='Depth estimator name', metavar='NAME', required=True)
@depth_weights_opt
@device_opt
@batch_opt
@click.option('--overwrite', help='Replace existing depth maps / an existing --dest', is_flag=True)
def add_depth(zip_path, dest, depth, depth_weights, device, batch_size, overwrite):
    """Add monocular depth maps to an existing zip without re-encoding its images."""
    _check_depth_name(depth, allow_file=False)
    _print_result(_run(convert_mod.add_to_zip, zip_path, dest, depth=depth, depth_weights=depth_weights, device=device, batch_size=batch_size, overwrite=overwrite))

@main.command('add-embeddings')
@click.argument('zip_path', metavar='ZIP')
@click.option('--dest', help='Write here instead of rewriting ZIP in place', metavar='ZIP')
@click.option('--embeddings', help='timm model name', metavar='MODEL', default='resnet50', show_default=True)
@weights_opt
@device_opt
@batch_opt
@click.option('--overwrite', help='Replace an existing --dest', is_flag=True)
def add_embeddings(zip_path, dest, embeddings, weights, device, batch_size, overwrite):
    """Add teacher embeddings (embeddings.npy, image order) to an existing zip."""
    _print_result(_run(convert_mod.add_to_zip, zip_path, dest, embeddings=embeddings, weights=weights, device=device, batch_size=batch_size, overwrite=overwrite))

main.add_command(synthetic.synthetic_cli, 'synthetic')

@main.command()
@click.argument('zip_path', metavar='ZIP')
def check(zip_path):
    """Validate a dataset zip and print a summary (exit status 1 on problems)."""
    summary, problems = _run(check_mod.check_dataset, zip_path)
    print(check_mod.format_summary(summary, problems))
    if problems:
        sys.exit(1)

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
