"""Shared metric machinery: options, feature detectors (cached, local or injected), feature statistics, progress."""

import copy
import hashlib
import os
import pickle
import time
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch

import dnnlib

#----------------------------------------------------------------------------
# Options passed to every metric function.

class MetricOptions:
    """What a metric needs: the generator, how to build the real dataset, the DDP rank and where to find detectors.

    device:       default cuda:<rank> when CUDA is available, else CPU.
    detector_dir: folder holding detector pickles by file name (else $EG3D_DETECTOR_DIR, else the URL cache).
    seed:         seed for latents and sampled labels, so that repeated evaluations see the same fakes.
    """
    def __init__(self, G: Optional[torch.nn.Module] = None, G_kwargs: dict = {}, dataset_kwargs: dict = {},
                 num_gpus: int = 1, rank: int = 0, device: Optional[Union[str, torch.device]] = None,
                 progress: Optional['ProgressMonitor'] = None, cache: bool = True, detector_dir: Optional[str] = None,
                 seed: int = 0):
        if not 0 <= rank < num_gpus:
            raise ValueError(f'rank must be in [0, num_gpus), got rank={rank}, num_gpus={num_gpus}')
        self.G = G
        self.G_kwargs = dnnlib.EasyDict(G_kwargs)
        self.dataset_kwargs = dnnlib.EasyDict(dataset_kwargs)
        self.num_gpus = num_gpus
        self.rank = rank
        if device is None: # as EG3D: this rank's GPU when there is one
            device = torch.device('cuda', rank) if torch.cuda.is_available() else torch.device('cpu')
        self.device = torch.device(device)
        self.progress = progress.sub() if progress is not None and rank == 0 else ProgressMonitor()
        self.cache = cache
        self.detector_dir = detector_dir
        self.seed = seed

#----------------------------------------------------------------------------
# Feature detectors.
# The official ones are pickles from NGC (spec e.2); they are looked up, in order, in the injected overrides, in
# detector_dir / $EG3D_DETECTOR_DIR, and in dnnlib's download cache (downloading if allowed).

DETECTOR_URLS = dnnlib.EasyDict(
    inception='https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics/inception-2015-12-05.pkl',
    vgg16='https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics/vgg16.pkl',
)
DETECTOR_DIR_ENV = 'EG3D_DETECTOR_DIR'

_detector_overrides: Dict[str, Callable[[], torch.nn.Module]] = dict()
_feature_detector_cache: Dict[Any, torch.nn.Module] = dict()

def get_feature_detector_name(url: str) -> str:
    """The detector's name: its file name without extension (.../inception-2015-12-05.pkl -> inception-2015-12-05)."""
    return os.path.splitext(url.split('/')[-1])[0]

def register_detector(name: str, factory: Optional[Callable[[], torch.nn.Module]]) -> None:
    """Inject a detector for a detector name (file stem, e.g. 'inception-2015-12-05'); None removes it.
    The factory's module is called as detector(uint8 NCHW images, **detector_kwargs) -> features [N, D]."""
    if factory is None:
        _detector_overrides.pop(name, None)
    else:
        _detector_overrides[name] = factory
    for key in [k for k in _feature_detector_cache if k[0] == name]:
        del _feature_detector_cache[key]

def detector_fingerprint(url: str) -> str:
    """Identity of the detector behind `url` for cache keys: the URL, or a hash of an injected detector's weights."""
    name = get_feature_detector_name(url)
    if name not in _detector_overrides:
        return url
    md5 = hashlib.md5()
    for t in get_feature_detector(url).state_dict().values():
        md5.update(t.detach().cpu().contiguous().numpy().tobytes())
    return f'injected:{name}:{md5.hexdigest()}'

def _detector_dir(detector_dir: Optional[str]) -> Optional[str]:
    """The detector folder in effect: the argument, else $EG3D_DETECTOR_DIR, else None (download cache)."""
    return detector_dir or os.environ.get(DETECTOR_DIR_ENV) or None

def _find_detector(url: str, detector_dir: Optional[str]) -> Tuple[Optional[str], str]:
    """(the detector's file if it is on disk, else None; where it belongs). Downloads nothing.

    With a detector folder (resolved from the argument or $EG3D_DETECTOR_DIR) the file belongs in it, though a
    copy in the download cache is accepted too; without one it belongs in the download cache (URLs) or at the path.
    """
    if url.startswith('file://'):
        url = urllib.request.url2pathname(urllib.parse.urlparse(url).path)
    cached = dnnlib.util.url_cache_path(url) if dnnlib.util.is_url(url) else None
    if detector_dir is not None:
        expected = os.path.join(detector_dir, url.split('/')[-1])
    else:
        expected = cached if cached is not None else url
    found = next((p for p in (expected, cached) if p is not None and os.path.isfile(p)), None)
    return found, expected

def _locate_detector(url: str, detector_dir: Optional[str], verbose: bool) -> str:
    """The detector's local file, downloading it into the cache if needed; MissingWeightsError naming the file
    and where to put it otherwise."""
    fname = url.split('/')[-1]
    detector_dir = _detector_dir(detector_dir)
    path, expected = _find_detector(url, detector_dir)
    if path is not None:
        return path
    if detector_dir is not None:
        raise dnnlib.util.MissingWeightsError(
            f'Feature detector {fname} not found in the detector directory {detector_dir} (from --detector-dir or '
            f'${DETECTOR_DIR_ENV}). Download {url} and save it as {expected}.')
    if not dnnlib.util.is_url(url):
        raise dnnlib.util.MissingWeightsError(f'Feature detector file {expected} does not exist.')
    try:
        return dnnlib.util.open_url(url, num_attempts=1, verbose=verbose, return_filename=True)
    except (dnnlib.util.MissingWeightsError, OSError) as err:
        raise dnnlib.util.MissingWeightsError(
            f'Feature detector {fname} is not available ({err}). Download {url} and put it in a folder passed as '
            f'--detector-dir (or set ${DETECTOR_DIR_ENV}), i.e. <dir>/{fname}.') from None

def missing_detector_files(urls: Iterable[str], detector_dir: Optional[str] = None) -> List[Tuple[str, str]]:
    """(file name, path where it belongs) for each detector that is neither injected nor on disk, in the order of
    `urls` without repeats. Downloads nothing, so a launcher can check before any work starts."""
    missing = []
    for url in dict.fromkeys(urls):
        if get_feature_detector_name(url) in _detector_overrides:
            continue
        found, expected = _find_detector(url, _detector_dir(detector_dir))
        if found is None:
            missing.append((url.split('/')[-1], expected))
    return missing

def prepare_detectors(urls: Iterable[str], detector_dir: Optional[str] = None, verbose: bool = False) -> None:
    """Make each detector loadable before any work starts: injected ones need nothing, the others are found on
    disk or downloaded now. Raises the MissingWeightsError that get_feature_detector would raise later."""
    for url in dict.fromkeys(urls):
        if get_feature_detector_name(url) not in _detector_overrides:
            _locate_detector(url, detector_dir, verbose)

def get_feature_detector(url: str, device: Union[str, torch.device] = 'cpu', num_gpus: int = 1, rank: int = 0,
                         verbose: bool = False, detector_dir: Optional[str] = None) -> torch.nn.Module:
    """Load (once per url and device) the detector network; rank 0 loads first so that only it downloads."""
    assert 0 <= rank < num_gpus
    name = get_feature_detector_name(url)
    key = (name, url, str(torch.device(device)), detector_dir if name not in _detector_overrides else None)
    is_leader = (rank == 0)
    if not is_leader and num_gpus > 1:
        torch.distributed.barrier() # leader goes first
    if key not in _feature_detector_cache:
        if name in _detector_overrides:
            det = _detector_overrides[name]()
        else:
            path = _locate_detector(url, detector_dir, verbose and is_leader)
            with open(path, 'rb') as f:
                det = pickle.load(f) if path.endswith('.pkl') else torch.jit.load(f, map_location='cpu')
        _feature_detector_cache[key] = det.eval().requires_grad_(False).to(device)
    if is_leader and num_gpus > 1:
        torch.distributed.barrier() # others follow
    return _feature_detector_cache[key]

#----------------------------------------------------------------------------
# A small random-init detector with the official call convention: for tests and quick CPU runs (not comparable
# with published numbers). Deterministic for a seed, so two processes build the same network.

class TinyDetector(torch.nn.Module):
    def __init__(self, feature_dim: int = 64, num_classes: int = 16, resolution: int = 32, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.resolution = resolution
        self.conv1 = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.conv2 = torch.nn.Conv2d(16, feature_dim, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(feature_dim, num_classes)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(max(p[0].numel(), 1)))

    def forward(self, img: torch.Tensor, return_features: bool = False, no_output_bias: bool = False,
                resize_images: bool = True, return_lpips: bool = False) -> torch.Tensor:
        if img.dtype != torch.uint8 or img.ndim != 4 or img.shape[1] != 3:
            raise ValueError(f'TinyDetector expects uint8 [N,3,H,W] images, got {img.dtype} {list(img.shape)}')
        x = img.to(torch.float32) / 127.5 - 1
        if resize_images:
            x = torch.nn.functional.interpolate(x, size=(self.resolution, self.resolution), mode='area')
        x = torch.nn.functional.leaky_relu(self.conv1(x), 0.2)
        feat = torch.nn.functional.leaky_relu(self.conv2(x), 0.2).mean(dim=[2, 3])
        if return_features or return_lpips:
            return feat
        logits = self.fc(feat) - (self.fc.bias if no_output_bias else 0)
        return torch.softmax(logits, dim=1)

#----------------------------------------------------------------------------
# Feature statistics (float64 running mean/cov and/or all rows).

class FeatureStats:
    """Accumulates feature rows [N, D] up to max_items: all rows (capture_all) and/or float64 running sums for the
    mean and covariance (capture_mean_cov). Items past max_items are dropped, so batches may overshoot."""
    def __init__(self, capture_all: bool = False, capture_mean_cov: bool = False, max_items: Optional[int] = None):
        self.capture_all = capture_all
        self.capture_mean_cov = capture_mean_cov
        self.max_items = max_items
        self.num_items = 0
        self.num_features = self.all_features = self.raw_mean = self.raw_cov = None

    def set_num_features(self, num_features: int) -> None:
        """Fix the feature width D on the first append (later appends must match) and allocate the sums."""
        if self.num_features is not None:
            assert num_features == self.num_features
        else:
            self.num_features = num_features
            self.all_features = []
            self.raw_mean = np.zeros([num_features], dtype=np.float64)
            self.raw_cov = np.zeros([num_features, num_features], dtype=np.float64)

    def is_full(self) -> bool:
        """True once max_items rows have been appended (never without max_items)."""
        return (self.max_items is not None) and (self.num_items >= self.max_items)

    def append(self, x: np.ndarray) -> None:
        """Add rows x [n, D] (as float32), truncated to what max_items still allows."""
        x = np.asarray(x, dtype=np.float32)
        assert x.ndim == 2
        if (self.max_items is not None) and (self.num_items + x.shape[0] > self.max_items):
            if self.num_items >= self.max_items:
                return
            x = x[:self.max_items - self.num_items]
        self.set_num_features(x.shape[1])
        self.num_items += x.shape[0]
        if self.capture_all:
            self.all_features.append(x)
        if self.capture_mean_cov:
            x64 = x.astype(np.float64)
            self.raw_mean += x64.sum(axis=0)
            self.raw_cov += x64.T @ x64

    def append_torch(self, x: torch.Tensor, num_gpus: int = 1, rank: int = 0) -> None:
        """Append a per-rank batch; with DDP the batches of all ranks are interleaved back into item order."""
        assert isinstance(x, torch.Tensor) and x.ndim == 2
        assert 0 <= rank < num_gpus
        if num_gpus > 1:
            ys = []
            for src in range(num_gpus):
                y = x.clone()
                torch.distributed.broadcast(y, src=src)
                ys.append(y)
            x = torch.stack(ys, dim=1).flatten(0, 1) # interleave samples
        self.append(x.cpu().numpy())

    def get_all(self) -> np.ndarray:
        """All captured rows [num_items, D] float32 (needs capture_all)."""
        assert self.capture_all
        return np.concatenate(self.all_features, axis=0)

    def get_all_torch(self) -> torch.Tensor:
        """get_all() as a CPU tensor."""
        return torch.from_numpy(self.get_all())

    def get_mean_cov(self) -> Tuple[np.ndarray, np.ndarray]:
        """Mean [D] and biased covariance [D, D] (divided by N), float64, as EG3D (needs capture_mean_cov)."""
        assert self.capture_mean_cov
        mean = self.raw_mean / self.num_items
        cov = self.raw_cov / self.num_items
        return mean, cov - np.outer(mean, mean)

    def save(self, pkl_file: str) -> None:
        """Pickle the state atomically (a crash leaves no half-written cache file)."""
        with dnnlib.util.atomic_write(pkl_file, 'wb') as f:
            pickle.dump(self.__dict__, f)

    @staticmethod
    def load(pkl_file: str) -> 'FeatureStats':
        """Inverse of save()."""
        with open(pkl_file, 'rb') as f:
            s = dnnlib.EasyDict(pickle.load(f))
        obj = FeatureStats(capture_all=s.capture_all, max_items=s.max_items)
        obj.__dict__.update(s)
        return obj

#----------------------------------------------------------------------------
# Progress: a tqdm bar on rank 0 when verbose, plus an optional progress_fn(cur, total) for callers.

class ProgressMonitor:
    def __init__(self, tag: Optional[str] = None, num_items: Optional[int] = None, flush_interval: int = 1000,
                 verbose: bool = False, progress_fn: Optional[Callable] = None, pfn_lo: int = 0, pfn_hi: int = 1000,
                 pfn_total: int = 1000):
        self.tag, self.num_items, self.verbose = tag, num_items, verbose
        self.flush_interval, self.progress_fn = flush_interval, progress_fn
        self.pfn_lo, self.pfn_hi, self.pfn_total = pfn_lo, pfn_hi, pfn_total
        self.start_time = time.time()
        self.batch_items = 0
        self.bar = None
        if verbose and tag is not None:
            import tqdm
            self.bar = tqdm.tqdm(total=num_items, desc=tag, unit='img', leave=False, dynamic_ncols=True)
        if self.progress_fn is not None:
            self.progress_fn(self.pfn_lo, self.pfn_total)

    def update(self, cur_items: int) -> None:
        assert (self.num_items is None) or (cur_items <= self.num_items)
        if self.bar is not None:
            self.bar.update(cur_items - self.bar.n)
        if (cur_items < self.batch_items + self.flush_interval) and (self.num_items is None or cur_items < self.num_items):
            return
        self.batch_items = cur_items
        if self.bar is not None and self.num_items is not None and cur_items >= self.num_items:
            self.bar.close()
            print(f'{self.tag:<19s} items {cur_items:<7d} time {dnnlib.util.format_time(time.time() - self.start_time):<12s}', flush=True)
        if self.progress_fn is not None and self.num_items:
            self.progress_fn(self.pfn_lo + (self.pfn_hi - self.pfn_lo) * (cur_items / self.num_items), self.pfn_total)

    def sub(self, tag: Optional[str] = None, num_items: Optional[int] = None, flush_interval: int = 1000,
            rel_lo: float = 0, rel_hi: float = 1) -> 'ProgressMonitor':
        return ProgressMonitor(tag=tag, num_items=num_items, flush_interval=flush_interval, verbose=self.verbose,
                               progress_fn=self.progress_fn,
                               pfn_lo=self.pfn_lo + (self.pfn_hi - self.pfn_lo) * rel_lo,
                               pfn_hi=self.pfn_lo + (self.pfn_hi - self.pfn_lo) * rel_hi, pfn_total=self.pfn_total)

#----------------------------------------------------------------------------
# Feature extraction for the real dataset (cached) and for the generator.

def _dataset_cache_key(opts: MetricOptions) -> dict:
    """dataset_kwargs plus the dataset file's size and mtime, so a rebuilt zip at the same path is not confused
    with the old one (EG3D hashes the options only)."""
    path = opts.dataset_kwargs.get('path', None)
    stamp = None
    if isinstance(path, str) and os.path.exists(path):
        st = os.stat(path)
        stamp = (st.st_size, int(st.st_mtime))
    return dict(opts.dataset_kwargs, _file_stamp=stamp)

def iterate_images(dataset: Any, item_subset: list, batch_size: int, data_loader_kwargs: dict):
    """uint8 [N,3,H,W] batches of dataset images (datasets may return (img, label) or (img, label, extras))."""
    loader = torch.utils.data.DataLoader(dataset=dataset, sampler=item_subset, batch_size=batch_size, **data_loader_kwargs)
    for batch in loader:
        images = batch[0]
        if images.shape[1] == 1:
            images = images.repeat([1, 3, 1, 1])
        yield images[:, :3]

def compute_feature_stats_for_dataset(opts: MetricOptions, detector_url: str, detector_kwargs: dict, rel_lo: float = 0,
                                      rel_hi: float = 1, batch_size: int = 64, data_loader_kwargs: Optional[dict] = None,
                                      max_items: Optional[int] = None, **stats_kwargs) -> FeatureStats:
    """Detector features of the real images; rank r handles items r, r+G, ...; cached by a hash of the options."""
    if not opts.dataset_kwargs:
        raise ValueError('This metric needs the training data: pass --data (or a pickle that records its dataset)')
    dataset = dnnlib.util.construct_class_by_name(**opts.dataset_kwargs)
    if data_loader_kwargs is None:
        cuda = opts.device.type == 'cuda'
        data_loader_kwargs = dict(pin_memory=True, num_workers=3, prefetch_factor=2) if cuda else dict(num_workers=0)

    # Try to look up the cached statistics (only rank 0 checks the disk; the answer is broadcast).
    cache_file = None
    if opts.cache:
        args = dict(dataset_kwargs=_dataset_cache_key(opts), detector_url=detector_fingerprint(detector_url),
                    detector_kwargs=detector_kwargs, stats_kwargs=stats_kwargs)
        md5 = hashlib.md5(repr(sorted(args.items())).encode('utf-8'))
        cache_tag = f'{dataset.name}-{get_feature_detector_name(detector_url)}-{md5.hexdigest()}'
        cache_file = dnnlib.make_cache_dir_path('gan-metrics', cache_tag + '.pkl')
        flag = os.path.isfile(cache_file) if opts.rank == 0 else False
        if opts.num_gpus > 1:
            flag = torch.as_tensor(flag, dtype=torch.float32, device=opts.device)
            torch.distributed.broadcast(tensor=flag, src=0)
            flag = (float(flag.cpu()) != 0)
        if flag:
            return FeatureStats.load(cache_file)

    num_items = len(dataset)
    if max_items is not None:
        num_items = min(num_items, max_items)
    stats = FeatureStats(max_items=num_items, **stats_kwargs)
    detector = get_feature_detector(url=detector_url, device=opts.device, num_gpus=opts.num_gpus, rank=opts.rank,
                                    verbose=opts.progress.verbose, detector_dir=opts.detector_dir)
    progress = opts.progress.sub(tag='dataset features', num_items=num_items, rel_lo=rel_lo, rel_hi=rel_hi)
    item_subset = [(i * opts.num_gpus + opts.rank) % num_items for i in range((num_items - 1) // opts.num_gpus + 1)]
    for images in iterate_images(dataset, item_subset, batch_size, data_loader_kwargs):
        with torch.no_grad():
            features = detector(images.to(opts.device), **detector_kwargs)
        stats.append_torch(features, num_gpus=opts.num_gpus, rank=opts.rank)
        progress.update(stats.num_items)

    if cache_file is not None and opts.rank == 0:
        os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        stats.save(cache_file)
    return stats

def iterate_dataset_labels(opts: MetricOptions, batch_size: int, rng: np.random.RandomState):
    """Endless batches of labels drawn from the dataset (EG3D: the same c conditions and renders the fakes).
    None = no labels: unconditional nets, or 3DGP nets without dataset classes (they sample random classes)."""
    c_dim = int(getattr(opts.G, 'c_dim', 0))
    dataset = dnnlib.util.construct_class_by_name(**opts.dataset_kwargs) if opts.dataset_kwargs and c_dim else None
    label_dim = dataset.label_dim if dataset is not None else 0
    if c_dim and label_dim != c_dim and (label_dim or not getattr(opts.G, 'learns_camera', False)):
        raise ValueError(f'The generator is conditioned on {c_dim}-d labels but the dataset provides {label_dim}-d '
                         f'labels' + (' (EG3D nets need the 25-d camera labels of dataset.json)' if c_dim == 25 else ''))
    while True:
        if not label_dim:
            yield None
            continue
        c = np.stack([dataset.get_label(rng.randint(len(dataset))) for _ in range(batch_size)])
        yield torch.from_numpy(c).to(torch.float32).to(opts.device)

def generated_batches(opts: MetricOptions, batch_gen: int, labels: bool = True):
    """Endless (z, c) batches: z ~ N(0, I) and dataset labels (None if not `labels`), reproducible from opts.seed
    and the rank."""
    seed = opts.seed * 1000003 + opts.rank
    gen = torch.Generator().manual_seed(seed)
    label_iter = iterate_dataset_labels(opts, batch_gen, np.random.RandomState(seed % (2 ** 32))) if labels else None
    while True:
        z = torch.randn([batch_gen, opts.G.z_dim], generator=gen).to(opts.device)
        yield z, (next(label_iter) if labels else None)

def compute_generated_rows(opts: MetricOptions, row_fn: Callable[[torch.Tensor, Optional[torch.Tensor]], torch.Tensor],
                           num_gen: int, batch_size: int, tag: str, labels: bool = True) -> np.ndarray:
    """Rows [num_gen, D] float32 of row_fn(z, c) -> [batch, D] (run without grad) over generated_batches, gathered
    from all ranks in item order, with a progress bar: the loop of the metrics that are not detector features."""
    stats = FeatureStats(capture_all=True, max_items=num_gen)
    progress = opts.progress.sub(tag=tag, num_items=num_gen)
    batches = generated_batches(opts, batch_size, labels=labels)
    while not stats.is_full():
        z, c = next(batches)
        with torch.no_grad():
            rows = row_fn(z, c)
        stats.append_torch(rows.to(device=opts.device, dtype=torch.float32), num_gpus=opts.num_gpus, rank=opts.rank)
        progress.update(stats.num_items)
    return stats.get_all()

def compute_feature_stats_for_generator(opts: MetricOptions, detector_url: str, detector_kwargs: dict, rel_lo: float = 0,
                                        rel_hi: float = 1, batch_size: int = 64, batch_gen: Optional[int] = None,
                                        **stats_kwargs) -> FeatureStats:
    """Detector features of generated images (uint8 via x*127.5+128), each rank generating its share."""
    import gen_utils
    if batch_gen is None:
        batch_gen = min(batch_size, 4)
    assert batch_size % batch_gen == 0
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    G_kwargs = dict(opts.G_kwargs)
    stats = FeatureStats(**stats_kwargs)
    assert stats.max_items is not None
    detector = get_feature_detector(url=detector_url, device=opts.device, num_gpus=opts.num_gpus, rank=opts.rank,
                                    verbose=opts.progress.verbose, detector_dir=opts.detector_dir)
    progress = opts.progress.sub(tag='generator features', num_items=stats.max_items, rel_lo=rel_lo, rel_hi=rel_hi)
    batches = generated_batches(opts, batch_gen)
    while not stats.is_full():
        images = []
        for _i in range(batch_size // batch_gen):
            z, c = next(batches)
            with torch.no_grad():
                img = gen_utils.generate(G, z, c, **G_kwargs)['image']
            images.append((img * 127.5 + 128).clamp(0, 255).to(torch.uint8))
        images = torch.cat(images)
        if images.shape[1] == 1:
            images = images.repeat([1, 3, 1, 1])
        with torch.no_grad():
            features = detector(images[:, :3], **detector_kwargs)
        stats.append_torch(features, num_gpus=opts.num_gpus, rank=opts.rank)
        progress.update(stats.num_items)
    return stats

#----------------------------------------------------------------------------
