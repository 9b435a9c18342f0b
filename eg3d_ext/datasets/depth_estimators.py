"""Monocular depth estimators for the data tool, registered under the registry kind 'depth_estimator'.

Every estimator maps uint8 images [N,3,H,W] to float32 depth-like maps [N,H,W] where **larger = farther**
(the 3DGP convention, see eg3d_ext/datasets/__init__.py): relative (disparity) models are order-flipped (-disparity),
metric models return metres. The transformer-based models need the optional extra `transformers` (pip install
'.[depth]'); weights come from a local folder (`weights=`), from <cache>/depth_estimators/<repo name>, or from the
Hugging Face cache, never silently from the network. Missing weights raise dnnlib.util.MissingWeightsError.
"""

import io
import os
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch

import dnnlib
from dnnlib import registry

#----------------------------------------------------------------------------
# 'file': depth maps shipped next to the images (`<stem>_depth.png`, 8/16-bit, or `<stem>_depth.npy`, float).

class FileDepth:
    """Reads shipped depth maps. PNGs are taken to follow the 16-bit convention already (8-bit x 256, as 3DGP);
    .npy maps hold raw depth (larger = farther) and are min-max normalised per image by the writer."""
    name = 'file'
    metric = False
    needs_files = True

    def __init__(self, **_kwargs: Any):
        pass

    @staticmethod
    def candidates(image_name: str) -> list:
        stem = os.path.splitext(image_name)[0]
        return [stem + '_depth.png', stem + '_depth.npy']

    @staticmethod
    def load(data: bytes, name: str) -> np.ndarray:
        """Bytes of a depth file -> float64 HW. PNG values stay on the 0..65535 scale; .npy values stay raw."""
        if name.lower().endswith('.npy'):
            try:
                arr = np.load(io.BytesIO(data), allow_pickle=False)
            except Exception as err:
                raise IOError(f'{name}: cannot read depth array ({err})') from None
            arr = np.squeeze(arr)
            if arr.ndim != 2:
                raise IOError(f'{name}: depth array must be 2-D (H x W), got shape {arr.shape}')
            return arr.astype(np.float64)
        from eg3d_ext.datasets.zip_writer import decode_depth_png
        return decode_depth_png(data, name).astype(np.float64)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("The 'file' depth source reads <stem>_depth.png files; it cannot estimate depth from pixels")

#----------------------------------------------------------------------------
# Transformers-based estimators (Depth Anything V2, ZoeDepth, DPT/MiDaS) through AutoModelForDepthEstimation.

class HFDepthEstimator(torch.nn.Module):
    """Wraps a `transformers` depth model. `config` (a transformers config or dict) builds random weights (tests)."""

    def __init__(self,
        model_id:   str,                        # Hugging Face repo id, used for the cache look-up and error messages.
        metric:     bool,                       # True: the model outputs metric depth; False: relative disparity.
        weights:    Optional[str] = None,       # Local folder with config.json + weights; None = look in the caches.
        config:     Union[None, Dict, Any] = None, # Build from this config with random weights instead of loading.
        input_size: int = 518,                  # Network input side (rounded to `multiple`).
        multiple:   int = 14,                   # Input sides must be multiples of this (ViT patch size).
        mean:       Sequence[float] = (0.485, 0.456, 0.406),
        std:        Sequence[float] = (0.229, 0.224, 0.225),
        device:     Union[str, torch.device] = 'cpu',
        name:       Optional[str] = None,
    ):
        super().__init__()
        try:
            import transformers
        except ImportError:
            raise ImportError(f"Depth estimator {name or model_id!r} needs the optional package 'transformers' "
                              f"(pip install '.[depth]' or pip install transformers)") from None
        self.name, self.model_id, self.metric = name or model_id, model_id, metric
        self.input_size, self.multiple = input_size, multiple
        if config is not None:
            if isinstance(config, dict):
                config = transformers.AutoConfig.for_model(**config)
            self.model = transformers.AutoModelForDepthEstimation.from_config(config)
        else:
            self.model = transformers.AutoModelForDepthEstimation.from_pretrained(self._find_weights(weights), local_files_only=True)
        self.model.eval().requires_grad_(False).to(device)
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1).to(device))
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1).to(device))

    def _find_weights(self, weights: Optional[str]) -> str:
        cache_dir = dnnlib.make_cache_dir_path('depth_estimators', self.model_id.split('/')[-1])
        for cand in ([weights] if weights else []) + [cache_dir]:
            if os.path.isfile(os.path.join(cand, 'config.json')):
                return cand
        if weights:
            raise dnnlib.util.MissingWeightsError(
                f'Depth estimator {self.name!r}: {weights!r} is not a folder with config.json and model weights. '
                f'Download them with `hf download {self.model_id} --local-dir {weights}`.')
        try: # a model already in the Hugging Face cache (no network access is attempted)
            from huggingface_hub import snapshot_download
            return snapshot_download(self.model_id, local_files_only=True)
        except Exception:
            raise dnnlib.util.MissingWeightsError(
                f'Depth estimator {self.name!r} needs the weights of {self.model_id!r} (config.json + model.safetensors), '
                f'which were not found. Download them with `hf download {self.model_id} --local-dir {cache_dir}` '
                f'(or anywhere, then pass --depth-weights <folder>).') from None

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or float [0,255] images [N,3,H,W] -> float32 [N,H,W], larger = farther."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f'{self.name}: expected images [N,3,H,W], got {tuple(images.shape)}')
        n, _, h, w = images.shape
        x = images.to(self.mean.device, torch.float32) / 255
        scale = self.input_size / max(h, w)
        size = [max(self.multiple, int(round(s * scale / self.multiple)) * self.multiple) for s in (h, w)]
        x = torch.nn.functional.interpolate(x, size=size, mode='bicubic', align_corners=False, antialias=True).clamp(0, 1)
        out = self.model(pixel_values=(x - self.mean) / self.std).predicted_depth
        out = torch.nn.functional.interpolate(out.reshape(n, 1, *out.shape[-2:]).float(), size=(h, w), mode='bilinear', align_corners=False)[:, 0]
        return out if self.metric else -out # relative models predict disparity: flip the order

#----------------------------------------------------------------------------
# Named presets. Factories take (weights=None, config=None, device='cpu', **overrides).

PRESETS = {
    'depth-anything':         dict(model_id='depth-anything/Depth-Anything-V2-Small-hf', metric=False),
    'depth-anything-base':    dict(model_id='depth-anything/Depth-Anything-V2-Base-hf', metric=False),
    'depth-anything-metric':  dict(model_id='depth-anything/Depth-Anything-V2-Metric-Outdoor-Small-hf', metric=True),
    'depth-anything-metric-indoor': dict(model_id='depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf', metric=True),
    'zoedepth':               dict(model_id='Intel/zoedepth-nyu-kitti', metric=True, input_size=512, multiple=32, mean=(0.5,) * 3, std=(0.5,) * 3),
    'dpt-midas':              dict(model_id='Intel/dpt-hybrid-midas', metric=False, input_size=384, multiple=32, mean=(0.5,) * 3, std=(0.5,) * 3),
}

def make_estimator(name: str, **kwargs: Any) -> Any:
    """Build a registered depth estimator by name ('file', 'depth-anything', ...)."""
    target = registry.resolve('depth_estimator', name)
    return target(**kwargs)

def _make_preset(name: str):
    def factory(weights: Optional[str] = None, config: Any = None, device: str = 'cpu', **overrides: Any) -> HFDepthEstimator:
        return HFDepthEstimator(**{**PRESETS[name], **overrides}, weights=weights, config=config, device=device, name=name)
    factory.__name__ = factory.__qualname__ = 'make_' + name.replace('-', '_')
    globals()[factory.__name__] = factory
    return factory

def register_builtin() -> None:
    """Register 'file' and the transformer presets (idempotent: same dotted targets)."""
    registry.register('depth_estimator', 'file', f'{__name__}.FileDepth')
    for name in PRESETS:
        registry.register('depth_estimator', name, f'{__name__}.{_make_preset(name).__name__}')

register_builtin()

#----------------------------------------------------------------------------
