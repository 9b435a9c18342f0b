"""Teacher embeddings (timm backbones, default ResNet-50 2048-d pooled features) for the dataset and the KD head."""

import math
import os
from typing import Any, Dict, Optional, Union

import torch

import dnnlib

#----------------------------------------------------------------------------

class Teacher(torch.nn.Module):
    """Frozen timm backbone with pooled features: `Teacher(model_name, weights_path, device)(images) -> [N, D]`.

    Images: uint8 [N,3,H,W] in [0,255], or float [N,3,H,W] in [-1,1] (the EG3D training convention for real
    images). They get the model's timm eval transform as tensor ops (3DGP's extract_features.py, spec 6.5): resize
    the short side to input_size / crop_pct with the model's interpolation (antialiased), center-crop input_size,
    normalise with the model's mean/std. The same class precomputes embeddings.npy and serves as the online KD teacher.
    """

    def __init__(self,
        model_name:   str = 'resnet50',                 # Any timm model name.
        weights_path: Optional[str] = None,             # Local .safetensors/.pth/.bin state dict; None = timm cache.
        device:       Union[str, torch.device] = 'cpu',
        input_size:   Optional[int] = None,            # None: the model's own eval size (224 for ResNet-50).
        random_init:  bool = False,                     # True: random weights (tests / benchmarks only).
        model_kwargs: Optional[Dict[str, Any]] = None,  # Extra timm.create_model kwargs.
    ):
        super().__init__()
        import timm
        self.model_name = model_name
        try:
            self.model = timm.create_model(model_name, pretrained=False, num_classes=0, **(model_kwargs or {}))
        except RuntimeError as err: # timm: "Unknown model"
            raise ValueError(f'Unknown timm model {model_name!r} for the teacher: {err}') from None
        if not random_init:
            self.model.load_state_dict(self._load_state(weights_path))
        cfg = getattr(self.model, 'pretrained_cfg', None) or {}
        self.model.eval().requires_grad_(False).to(device)
        self.register_buffer('mean', torch.tensor(cfg.get('mean', (0.485, 0.456, 0.406)), dtype=torch.float32).view(1, 3, 1, 1).to(device))
        self.register_buffer('std', torch.tensor(cfg.get('std', (0.229, 0.224, 0.225)), dtype=torch.float32).view(1, 3, 1, 1).to(device))
        self.input_size = int(input_size or cfg.get('input_size', (3, 224, 224))[-1])
        self.crop_pct = float(cfg.get('crop_pct', 0.875))
        self.interpolation = 'bilinear' if cfg.get('interpolation') == 'bilinear' else 'bicubic'
        self.dim = int(self.model.num_features)

    def _load_state(self, weights_path: Optional[str]) -> Dict[str, torch.Tensor]:
        cand = weights_path or dnnlib.make_cache_dir_path('teachers', f'{self.model_name}.safetensors')
        if not os.path.isfile(cand):
            raise dnnlib.util.MissingWeightsError(
                f'Teacher {self.model_name!r}: weights file {cand!r} not found. Download the timm checkpoint '
                f'(e.g. `hf download timm/{self.model_name}.a1_in1k model.safetensors` for resnet50) and pass its path '
                f'with --weights, or copy it to {dnnlib.make_cache_dir_path("teachers", self.model_name + ".safetensors")}.')
        if cand.endswith('.safetensors'):
            import safetensors.torch
            state = safetensors.torch.load_file(cand)
        else:
            state = torch.load(cand, map_location='cpu', weights_only=True)
            state = state.get('state_dict', state) if isinstance(state, dict) else state
        own = self.model.state_dict()
        state = {k: v for k, v in state.items() if k in own} # drops the classifier (num_classes=0)
        missing = [k for k in own if k not in state]
        if missing:
            raise IOError(f'Teacher {self.model_name!r}: {cand} lacks {len(missing)} backbone tensors (e.g. {missing[0]!r}); '
                          f'is it a checkpoint of another architecture?')
        return state

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f'Teacher expects images [N,3,H,W], got {tuple(images.shape)}')
        return self.model(self.preprocess(images)).float()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or [-1,1] images [N,3,H,W] -> normalised [N,3,input_size,input_size] model input."""
        x = images.to(self.mean.device)
        x = x.float() / 255 if x.dtype == torch.uint8 else (x.float() + 1) / 2
        h, w = x.shape[-2:]
        short = math.floor(self.input_size / self.crop_pct) # torchvision Resize(int): short side exact, long truncated
        size = [short, int(short * w / h)] if h <= w else [int(short * h / w), short]
        if size != [h, w]:
            x = torch.nn.functional.interpolate(x, size=size, mode=self.interpolation, align_corners=False, antialias=True)
            x = x.clamp(0, 1) # bicubic overshoot; PIL clamps to uint8 as well
        top, left = [int(round((s - self.input_size) / 2)) for s in size] # torchvision CenterCrop
        x = x[:, :, top:top + self.input_size, left:left + self.input_size]
        return (x - self.mean) / self.std

#----------------------------------------------------------------------------

def feature_dim(model_name: str) -> int:
    """Width of a timm backbone's pooled features (the KD head's output size), without building its weights."""
    import timm
    with torch.device('meta'):
        return int(timm.create_model(model_name, pretrained=False, num_classes=0).num_features)

#----------------------------------------------------------------------------
