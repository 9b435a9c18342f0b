"""Validation of RGB-D dataset zips: images, depth maps, labels, cameras and embeddings."""

import io
from typing import Any, Dict, List, Tuple

import numpy as np
import PIL.Image

from eg3d_ext.datasets import zip_writer as zw

#----------------------------------------------------------------------------

def _label_kind(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return 'invalid'
    if isinstance(value, (int, np.integer)):
        return 'class'
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return f'vector[{len(value)}]'
    return 'invalid'

def check_dataset(path: str, max_errors: int = 20) -> Tuple[Dict[str, Any], List[str]]:
    """Validate a dataset zip. Returns (summary, problems); an empty problem list means the zip is usable."""
    problems: List[str] = []
    def problem(msg: str) -> None:
        if len(problems) < max_errors:
            problems.append(msg)
        elif len(problems) == max_errors:
            problems.append('... (further problems not listed)')
    summary: Dict[str, Any] = dict(path=path)
    with zw.open_zip(path) as zf:
        all_names = set(zf.namelist())
        images = zw.list_images(zf)
        summary['num_images'] = len(images)
        if not images:
            return summary, [f'{path}: no images found']
        sizes, modes, depth_count = {}, {}, 0
        for name in images:
            try:
                with PIL.Image.open(io.BytesIO(zf.read(name))) as img:
                    img.load()
                    size, mode = img.size, img.mode
            except Exception as err:
                problem(f'{name}: corrupt or truncated image ({type(err).__name__}: {err})')
                continue
            sizes[size] = sizes.get(size, 0) + 1
            modes[mode] = modes.get(mode, 0) + 1
            if mode not in ('RGB', 'L'):
                problem(f'{name}: image mode {mode}; expected 8-bit RGB (or L)')
            if size[0] != size[1] or size[0] & (size[0] - 1):
                problem(f'{name}: image is {size[0]}x{size[1]}; expected square and a power of two')
            dname = zw.depth_fname(name)
            if dname in all_names:
                depth_count += 1
                try:
                    with PIL.Image.open(io.BytesIO(zf.read(dname))) as dimg:
                        dimg.load()
                        if dimg.size != size:
                            problem(f'{dname}: depth map is {dimg.size[0]}x{dimg.size[1]} but the image is {size[0]}x{size[1]}')
                        if not dimg.mode.startswith('I;16') and dimg.mode not in ('I', 'L'):
                            problem(f'{dname}: depth map mode {dimg.mode}; expected a 16-bit grayscale PNG')
                except Exception as err:
                    problem(f'{dname}: corrupt depth map ({type(err).__name__}: {err})')
        if len(sizes) > 1:
            problem(f'images have different sizes: {sorted(sizes.items())}')
        summary.update(sizes={f'{w}x{h}': n for (w, h), n in sorted(sizes.items())}, modes=modes, depth_maps=depth_count)
        if 0 < depth_count < len(images):
            problem(f'only {depth_count} of {len(images)} images have a depth map (<stem>_depth.png)')
        meta = zw.read_dataset_json(zf)
        _check_meta(meta, images, summary, problem)
        if zw.EMBEDDINGS_NAME in all_names:
            try:
                emb = np.load(io.BytesIO(zf.read(zw.EMBEDDINGS_NAME)), allow_pickle=False)
                summary['embeddings'] = f'{list(emb.shape)} {emb.dtype}'
                if emb.ndim != 2 or emb.shape[0] != len(images):
                    problem(f'{zw.EMBEDDINGS_NAME}: shape {list(emb.shape)}, expected [{len(images)}, D] (one row per image, in order)')
                elif not np.all(np.isfinite(emb)):
                    problem(f'{zw.EMBEDDINGS_NAME}: contains NaN or inf')
            except Exception as err:
                problem(f'{zw.EMBEDDINGS_NAME}: unreadable ({err})')
        else:
            summary['embeddings'] = None
    return summary, problems

def _check_meta(meta, images, summary, problem) -> None:
    if meta is None:
        summary['labels'] = None
        return
    for key in ('labels', 'class_labels', 'cameras'):
        value = meta.get(key)
        if value is None:
            summary[key] = None
            continue
        try:
            table = dict(value)
        except (TypeError, ValueError):
            problem(f'dataset.json "{key}" must be a list of [path, value] pairs')
            continue
        missing = [n for n in images if n not in table]
        if missing:
            problem(f'dataset.json "{key}": {len(missing)} images have no entry (e.g. {missing[0]})')
        if key == 'cameras':
            bad = [n for n, v in table.items() if not isinstance(v, dict) or len(v.get('c', [])) != 25]
            if bad:
                problem(f'dataset.json "cameras": {len(bad)} entries lack a 25-float "c" (e.g. {bad[0]})')
            summary[key] = len(table)
            continue
        kinds = {}
        for n in images:
            if n in table:
                kinds[_label_kind(table[n])] = kinds.get(_label_kind(table[n]), 0) + 1
        if 'invalid' in kinds or len(kinds) > 1:
            problem(f'dataset.json "{key}": inconsistent or invalid labels {kinds}; expected all ints or all equal-length float lists')
        if kinds.get('class'):
            vals = [table[n] for n in images if n in table and _label_kind(table[n]) == 'class']
            summary[key] = f'class, {len(set(vals))} classes (max {max(vals)})'
            if min(vals) < 0:
                problem(f'dataset.json "{key}": negative class index {min(vals)}')
        else:
            summary[key] = ', '.join(kinds)
    if 'depth' in meta:
        summary['depth_meta'] = {k: v for k, v in meta['depth'].items() if k != 'ranges'}

def format_summary(summary: Dict[str, Any], problems: List[str]) -> str:
    lines = [f'{k:12s}: {v}' for k, v in summary.items()]
    lines.append('OK' if not problems else f'{len(problems)} problem(s):')
    lines += ['  ' + p for p in problems]
    return '\n'.join(lines)

#----------------------------------------------------------------------------
