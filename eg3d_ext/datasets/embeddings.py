"""Teacher embeddings (timm backbones, default ResNet-50 2048-d pooled features) for the dataset and the KD head."""

import os
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

import dnnlib

#----------------------------------------------------------------------------

class Teacher(torch.nn.Module):
    """Frozen timm backbone with pooled features: `Teacher(model_name, weights_path, device)(images) -> [N, D]`.

    Images: uint8 [N,3,H,W] in [0,255], or float [N,3,H,W] in [-1,1] (the EG3D training convention for real
    images). They are resized to `input_size` (bilinear, antialiased) and normalised with the model's mean/std
    (ImageNet for ResNet-50). The same class precomputes embeddings.npy and serves as the online KD teacher.
    """

    def __init__(self,
        model_name:   str = 'resnet50',                 # Any timm model name.
        weights_path: Optional[str] = None,             # Local .safetensors/.pth/.bin state dict; None = timm cache.
        device:       Union[str, torch.device] = 'cpu',
        input_size:   int = 224,
        random_init:  bool = False,                     # True: random weights (tests / benchmarks only).
        model_kwargs: Optional[Dict[str, Any]] = None,  # Extra timm.create_model kwargs.
    ):
        super().__init__()
        import timm
        self.model_name, self.input_size = model_name, input_size
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
        x = images.to(self.mean.device)
        x = x.float() / 255 if x.dtype == torch.uint8 else (x.float() + 1) / 2
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = torch.nn.functional.interpolate(x, size=(self.input_size, self.input_size), mode='bilinear', align_corners=False, antialias=True)
        return self.model((x - self.mean) / self.std).float()

#----------------------------------------------------------------------------

def compute_embeddings(teacher: Teacher, images_iter, num: int, batch_size: int = 32, dtype=np.float16, progress: bool = True) -> np.ndarray:
    """Embed uint8 HWC numpy images from `images_iter` (in dataset order) -> [num, D] array of `dtype`."""
    import tqdm
    out = np.zeros([num, teacher.dim], dtype=dtype)
    batch, i = [], 0
    def flush():
        nonlocal batch, i
        if batch:
            x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
            out[i:i + len(batch)] = teacher(x).cpu().numpy().astype(dtype)
            i += len(batch)
            batch = []
    with tqdm.tqdm(total=num, disable=not progress, unit='img', desc=f'embeddings ({teacher.model_name})') as bar:
        for img in images_iter:
            batch.append(img)
            if len(batch) == batch_size:
                bar.update(len(batch)); flush()
        bar.update(len(batch)); flush()
    if i != num:
        raise ValueError(f'compute_embeddings(): expected {num} images, got {i}')
    return out

#----------------------------------------------------------------------------
