"""Dataset conversion: source readers, EG3D transforms, multiprocess decoding, depth and embedding passes."""

import io
import json
import multiprocessing
import os
import zipfile
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import PIL.Image

from eg3d_ext.datasets import zip_writer as zw

#----------------------------------------------------------------------------
# Sources: a folder, a class-per-folder tree (ImageNet layout), a zip or an EG3D zip.

class Source:
    """Sorted image names, raw bytes by name, labels. Picklable (each worker re-opens a zip)."""

    def __init__(self, path: str, labels: str = 'auto'):
        if labels not in ('auto', 'json', 'folders', 'none'):
            raise ValueError(f"labels must be auto|json|folders|none, got {labels!r}")
        self.path, self._zip = path, None
        if os.path.isdir(path):
            self.kind = 'folder'
            files = [os.path.relpath(os.path.join(root, f), path).replace(os.sep, '/') for root, _dirs, fs in os.walk(path) for f in fs]
        elif os.path.isfile(path) and zipfile.is_zipfile(path):
            self.kind = 'zip'
            files = [n for n in self._get_zip().namelist() if not n.endswith('/')]
        elif not os.path.exists(path):
            raise FileNotFoundError(f'--source {path!r} does not exist')
        else:
            raise ValueError(f'--source {path!r} must be a folder or a zip file')
        self.all_files = set(files)
        self.names = sorted(f for f in files if zw.is_image_fname(f))
        if not self.names:
            raise ValueError(f'No images found in {path!r}')
        self.meta = self._read_json('dataset.json') if 'dataset.json' in self.all_files else None
        self.labels, self.class_names = self._labels(labels)

    def _get_zip(self) -> zipfile.ZipFile:
        if self._zip is None:
            self._zip = zw.open_zip(self.path)
        return self._zip

    def __getstate__(self):
        return {**self.__dict__, '_zip': None}

    def read(self, name: str) -> bytes:
        if self.kind == 'zip':
            return self._get_zip().read(name)
        with open(os.path.join(self.path, name), 'rb') as f:
            return f.read()

    def _read_json(self, name: str) -> Dict[str, Any]:
        try:
            return json.loads(self.read(name).decode('utf-8'))
        except Exception as err:
            raise ValueError(f'{self.path}: cannot parse {name} ({err})') from None

    def _labels(self, mode: str) -> Tuple[Optional[Dict[str, Any]], Optional[List[str]]]:
        labels = (self.meta or {}).get('labels')
        if mode == 'json' and labels is None:
            raise ValueError(f'--labels json: {self.path!r} has no dataset.json with "labels"')
        top = sorted({n.split('/')[0] for n in self.names})
        is_tree = all(n.count('/') == 1 for n in self.names) and len(top) > 1
        if mode == 'folders' or (mode == 'auto' and labels is None and is_tree):
            if not all('/' in n for n in self.names):
                raise ValueError(f'--labels folders: every image must be inside a class folder of {self.path!r}')
            index = {c: i for i, c in enumerate(top)}
            return {n: index[n.split('/')[0]] for n in self.names}, top
        if mode == 'none' or labels is None:
            return None, (self.meta or {}).get('class_names')
        labels = dict(labels)
        missing = [n for n in self.names if n not in labels]
        if missing:
            raise ValueError(f'dataset.json of {self.path!r} has no label for {len(missing)} of {len(self.names)} images '
                             f'(e.g. {missing[0]!r}); fix it or pass --labels none (or --labels folders)')
        return labels, (self.meta or {}).get('class_names')

    def keyed(self, key: str) -> Optional[Dict[str, Any]]:
        """Per-image entries of another dataset.json key stored as [name, value] pairs (e.g. 'cameras')."""
        value = (self.meta or {}).get(key)
        return dict(value) if isinstance(value, list) else None

#----------------------------------------------------------------------------
# Decoding and EG3D transforms.

def load_image(data: bytes, name: str) -> Tuple[PIL.Image.Image, Optional[str]]:
    """Bytes -> RGB PIL image and a note on any conversion. Corrupt, truncated or 16-bit images raise IOError."""
    try:
        img = PIL.Image.open(io.BytesIO(data))
        img.load()
    except Exception as err:
        raise IOError(f'{name}: corrupt or truncated image ({type(err).__name__}: {err})') from None
    if img.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'F') or img.mode.startswith('I;16'):
        raise IOError(f'{name}: {img.mode} image ({"16-bit" if "16" in img.mode or img.mode == "I" else "float"}) '
                      f'is not supported; convert it to 8-bit RGB (or, if it is a depth map, name it <stem>_depth.png)')
    if img.mode == 'RGB':
        return img, None
    note = {'L': 'grayscale', '1': 'grayscale', 'LA': 'grayscale', 'RGBA': 'rgba', 'PA': 'rgba'}.get(img.mode, img.mode.lower())
    if img.mode == 'P' and 'transparency' in img.info:
        note = 'rgba'
    return img.convert('RGB'), note # EG3D also drops alpha

def transform_box(w: int, h: int, transform: Optional[str], resolution: Optional[int]) -> Tuple[Tuple[int, int, int, int], Tuple[int, int], Tuple[int, int]]:
    """(crop box, resized size, paste offset) for EG3D's transforms; the same geometry is applied to depth."""
    if transform is None:
        return (0, 0, w, h), ((resolution, resolution) if resolution else (w, h)), (0, 0)
    if resolution is None:
        raise ValueError('--transform needs --resolution')
    if transform == 'center-crop':
        c = min(w, h)
        return ((w - c) // 2, (h - c) // 2, (w - c) // 2 + c, (h - c) // 2 + c), (resolution, resolution), (0, 0)
    if transform == 'center-crop-wide':
        ch = int(np.round(resolution * h / w)) # fit the width, letterbox vertically (EG3D)
        if ch > resolution: # taller than wide: plain center crop
            top = (h - w) // 2
            return (0, top, w, top + w), (resolution, resolution), (0, 0)
        return (0, 0, w, h), (resolution, ch), (0, (resolution - ch) // 2)
    raise ValueError(f'Unknown --transform {transform!r}; valid: center-crop, center-crop-wide')

def apply_transform(img: PIL.Image.Image, geom, resample: int, size: int, fill: Any = 0) -> PIL.Image.Image:
    box, out_size, offset = geom
    if box != (0, 0) + img.size:
        img = img.crop(box)
    if img.size != out_size:
        img = img.resize(out_size, resample)
    if offset != (0, 0):
        canvas = PIL.Image.new(img.mode, (size, size), fill)
        canvas.paste(img, offset)
        img = canvas
    return img

def depth_entry(d: np.ndarray, is_png: bool) -> Tuple[bytes, Optional[Tuple[float, float]]]:
    """Float depth-like map -> 16-bit PNG bytes and the (lo, hi) range (None when the file was already 16-bit)."""
    if is_png:
        return zw.encode_png(np.clip(np.rint(d), 0, zw.DEPTH_MAX).astype(np.uint16)), None
    q, rng = zw.depth_to_uint16(d)
    return zw.encode_png(q), rng

#----------------------------------------------------------------------------
# Per-image worker (runs in a pool): decode, validate, transform, encode.

_G: Dict[str, Any] = {}

def _init_worker(cfg: Dict[str, Any]) -> None:
    _G.update(cfg)

def process_one(item: Tuple[int, str]) -> Dict[str, Any]:
    idx, name = item
    src: Source = _G['source']
    try:
        img, note = load_image(src.read(name), name)
        src_w, src_h = img.size
        geom = transform_box(src_w, src_h, _G['transform'], _G['resolution'])
        size = geom[1][0]
        img = apply_transform(img, geom, PIL.Image.LANCZOS, size)
        arr = np.asarray(img)
        if arr.shape[0] != arr.shape[1] or arr.shape[0] & (arr.shape[0] - 1):
            raise ValueError(f'{name}: image is {arr.shape[1]}x{arr.shape[0]} after the transform; output must be square '
                             f'and a power of two (use --transform center-crop --resolution 256)')
        out = dict(idx=idx, name=name, note=note, png=zw.encode_png(arr), shape=arr.shape, arr=arr if _G['keep_arrays'] else None)
        if _G['depth_files']:
            from eg3d_ext.datasets.depth_estimators import FileDepth
            cands = [c for c in FileDepth.candidates(name) if c in src.all_files]
            if not cands:
                raise IOError(f'{name}: --depth file but no depth map found (expected {FileDepth.candidates(name)[0]})')
            d = FileDepth.load(src.read(cands[0]), cands[0])
            if d.shape != (src_h, src_w):
                raise ValueError(f'{cands[0]}: depth map is {d.shape[1]}x{d.shape[0]} but image {name} is {src_w}x{src_h}')
            is_png = cands[0].endswith('.png')
            fill = zw.DEPTH_MAX if is_png else float(d.max()) # letterbox = far
            d = np.asarray(apply_transform(PIL.Image.fromarray(d.astype(np.float32), mode='F'), geom, PIL.Image.BILINEAR, size, fill))
            out['depth_png'], out['depth_range'] = depth_entry(d, is_png)
        return out
    except (IOError, OSError, ValueError) as err:
        return dict(idx=idx, name=name, error=str(err))

def iter_processed(source: Source, names: List[str], cfg: Dict[str, Any], workers: int) -> Iterator[Dict[str, Any]]:
    """Ordered results of process_one over `names`, with `workers` processes (1 = in-process)."""
    cfg = dict(cfg, source=source)
    items = list(enumerate(names))
    if workers <= 1:
        _init_worker(cfg)
        yield from map(process_one, items)
        return
    ctx = multiprocessing.get_context('fork' if 'fork' in multiprocessing.get_all_start_methods() else 'spawn')
    with ctx.Pool(workers, initializer=_init_worker, initargs=(cfg,)) as pool:
        yield from pool.imap(process_one, items, chunksize=max(1, min(64, len(items) // (workers * 8))))

#----------------------------------------------------------------------------
# Depth and embedding passes (batched in the main process; models are not forked).

class _Batcher:
    """Collects (name, uint8 HWC) pairs and runs depth / teacher models on full batches."""

    def __init__(self, writer, estimator, teacher, num: int, batch_size: int, device: str):
        import torch
        self.torch, self.w, self.est, self.teacher, self.bs, self.device = torch, writer, estimator, teacher, batch_size, device
        self.items: List[Tuple[int, str, np.ndarray]] = []
        self.ranges: Dict[str, List[float]] = {}
        self.emb = np.zeros([num, teacher.dim], dtype=np.float16) if teacher is not None else None

    def add(self, idx: int, name: str, arr: np.ndarray) -> None:
        self.items.append((idx, name, arr))
        if len(self.items) >= self.bs:
            self.flush()

    def flush(self) -> None:
        if not self.items:
            return
        x = self.torch.from_numpy(np.stack([a for _, _, a in self.items])).permute(0, 3, 1, 2).to(self.device)
        if self.est is not None:
            depth = self.est(x).cpu().numpy()
            for (_, name, _), d in zip(self.items, depth):
                q, rng = zw.depth_to_uint16(d)
                self.w.add(zw.depth_fname(name), zw.encode_png(q))
                self.ranges[name] = list(rng)
        if self.teacher is not None:
            self.emb[[i for i, _, _ in self.items]] = self.teacher(x).cpu().numpy().astype(np.float16)
        self.items = []

def build_models(depth: str, depth_weights: Optional[str], embeddings: str, weights: Optional[str], device: str,
                 depth_kwargs: Optional[Dict] = None, teacher_kwargs: Optional[Dict] = None):
    """(estimator or None, teacher or None) from the CLI names; 'file' and 'none' give no estimator."""
    est = teacher = None
    if depth not in ('none', 'file'):
        from eg3d_ext.datasets import depth_estimators
        try:
            est = depth_estimators.make_estimator(depth, weights=depth_weights, device=device, **(depth_kwargs or {}))
        except KeyError as err:
            raise ValueError(str(err).strip('"')) from None
    if embeddings != 'none':
        from eg3d_ext.datasets.embeddings import Teacher
        teacher = Teacher(embeddings, weights, device=device, **(teacher_kwargs or {}))
    return est, teacher

def depth_meta(depth: str, est, ranges: Dict[str, List[float]]) -> Dict[str, Any]:
    meta = dict(source=depth, convention='larger_is_farther', encoding='per_image_minmax' if ranges else 'as_shipped')
    if est is not None:
        meta.update(metric=bool(est.metric), model=getattr(est, 'model_id', depth))
    if ranges:
        meta['ranges'] = sorted(ranges.items())
    return meta

def convert_dataset(source: str, dest: str, max_images: Optional[int] = None, transform: Optional[str] = None,
                    resolution: Optional[int] = None, depth: str = 'none', depth_weights: Optional[str] = None,
                    embeddings: str = 'none', weights: Optional[str] = None, workers: int = 1, overwrite: bool = False,
                    labels: str = 'auto', device: str = 'cpu', batch_size: int = 16, skip_bad: bool = False,
                    progress: bool = True, depth_kwargs: Optional[Dict] = None, teacher_kwargs: Optional[Dict] = None) -> Dict[str, Any]:
    """Convert `source` into an RGB-D dataset zip at `dest`. Returns a summary dict (counts, notes, skipped)."""
    import tqdm
    zw.check_dest(dest, overwrite)
    src = Source(source, labels)
    names = src.names[:max_images] if max_images else src.names
    est, teacher = build_models(depth, depth_weights, embeddings, weights, device, depth_kwargs, teacher_kwargs)
    cfg = dict(transform=transform, resolution=resolution, depth_files=depth == 'file', keep_arrays=est is not None or teacher is not None)
    notes: Dict[str, int] = {}
    skipped: List[str] = []
    out_names, out_labels, shape = [], [], None
    depth_ranges: Dict[str, List[float]] = {}
    with zw.zip_writer(dest, overwrite=overwrite) as w:
        batcher = _Batcher(w, est, teacher, len(names), batch_size, device)
        for r in tqdm.tqdm(iter_processed(src, names, cfg, workers), total=len(names), disable=not progress, unit='img', desc='convert'):
            if 'error' not in r and shape is not None and r['shape'] != shape:
                r['error'] = f'{r["name"]}: image is {r["shape"][1]}x{r["shape"][0]} but earlier images are {shape[1]}x{shape[0]}; use --resolution'
            if 'error' in r:
                if not skip_bad:
                    raise ValueError(r['error'] + ' (pass --skip-bad to skip such images)')
                skipped.append(r['error'])
                continue
            shape = r['shape']
            out = zw.image_fname(len(out_names))
            w.add(out, r['png'])
            if r.get('depth_png'):
                w.add(zw.depth_fname(out), r['depth_png'])
                if r['depth_range']:
                    depth_ranges[out] = list(r['depth_range'])
            if r['note']:
                notes[r['note']] = notes.get(r['note'], 0) + 1
            if r['arr'] is not None:
                batcher.add(len(out_names), out, r['arr'])
            out_names.append(r['name'])
            out_labels.append([out, src.labels[r['name']]] if src.labels is not None else None)
        batcher.flush()
        if not out_names:
            raise ValueError(f'No usable images in {source!r}')
        meta = dict(labels=out_labels if src.labels is not None else None)
        if src.class_names:
            meta['class_names'] = src.class_names
        for key in ('class_labels', 'cameras'): # per-image extras carried over under the new names
            old = src.keyed(key)
            if old is not None:
                meta[key] = [[zw.image_fname(i), old[n]] for i, n in enumerate(out_names) if n in old]
        if depth != 'none':
            meta['depth'] = depth_meta(depth, est, {**depth_ranges, **batcher.ranges})
        if teacher is not None:
            emb = batcher.emb[:len(out_names)]
            w.add_npy(zw.EMBEDDINGS_NAME, emb)
            meta['embeddings'] = dict(model=embeddings, dim=int(emb.shape[1]), count=len(out_names), dtype=str(emb.dtype), file=zw.EMBEDDINGS_NAME)
        w.add_json(zw.DATASET_JSON, meta)
    return dict(dest=dest, num_images=len(out_names), resolution=shape[0], notes=notes, skipped=skipped)

#----------------------------------------------------------------------------
# Adding depth or embeddings to an existing zip without re-encoding images.

def _zip_images(path: str) -> Iterator[Tuple[str, np.ndarray]]:
    with zw.open_zip(path) as zf:
        for name in zw.list_images(zf):
            img, _ = load_image(zf.read(name), name)
            yield name, np.asarray(img)

def add_to_zip(path: str, dest: Optional[str] = None, depth: str = 'none', depth_weights: Optional[str] = None,
               embeddings: str = 'none', weights: Optional[str] = None, device: str = 'cpu', batch_size: int = 16,
               overwrite: bool = False, progress: bool = True, depth_kwargs: Optional[Dict] = None, teacher_kwargs: Optional[Dict] = None) -> Dict[str, Any]:
    """Add (or replace) depth maps and/or embeddings.npy; rewrites `dest` (default: `path` in place) atomically."""
    import tqdm
    if depth == 'file':
        raise ValueError("add-depth needs an estimator; to use shipped depth maps, run convert with --depth file")
    dest = dest or path
    if os.path.abspath(dest) != os.path.abspath(path):
        zw.check_dest(dest, overwrite)
    with zw.open_zip(path) as zf:
        meta = zw.read_dataset_json(zf) or dict(labels=None)
        images = zw.list_images(zf)
        existing = [n for n in images if zw.depth_fname(n) in set(zf.namelist())]
    if depth != 'none' and existing and not overwrite:
        raise FileExistsError(f'{path} already has depth maps ({len(existing)} of {len(images)}); pass --overwrite to replace them')
    est, teacher = build_models(depth, depth_weights, embeddings, weights, device, depth_kwargs, teacher_kwargs)

    def fill(w) -> None:
        b = _Batcher(w, est, teacher, len(images), batch_size, device)
        for i, (name, arr) in enumerate(tqdm.tqdm(_zip_images(path), total=len(images), disable=not progress, unit='img')):
            b.add(i, name, arr)
        b.flush()
        if est is not None:
            meta['depth'] = depth_meta(depth, est, b.ranges)
        if teacher is not None:
            w.add_npy(zw.EMBEDDINGS_NAME, b.emb)
            meta['embeddings'] = dict(model=embeddings, dim=int(b.emb.shape[1]), count=len(images), dtype=str(b.emb.dtype), file=zw.EMBEDDINGS_NAME)
        w.add_json(zw.DATASET_JSON, meta)

    drop_depth = est is not None
    keep = lambda n: n != zw.DATASET_JSON and not (drop_depth and zw.is_depth_fname(n)) and not (teacher is not None and n == zw.EMBEDDINGS_NAME)
    zw.rewrite_zip(path, dest, keep, fill, overwrite=True)
    return dict(dest=dest, num_images=len(images))

#----------------------------------------------------------------------------
