"""3DGP's discriminator as pickled: `training.networks_discriminator.Discriminator` is *not* persistent in 3DGP
(pickled by reference, with a bare `training.` prefix), so loading needs a class under our control with the same
attributes and forward (eg3d-compatibility.md a.7, 3dgp-reference.md 4). Its blocks and epilogue are persistent and
run their own embedded code; this class only wires them: patch embedding -> hyper-modulation -> blocks -> projection
head -> epilogue (logits, and the distillation features when asked)."""

import inspect
from typing import Any, Optional, Tuple

import torch

from .networks import _placeholder

# The persistent classes of networks_discriminator.py carry their own code; only their names must import.
DiscriminatorBlock = _placeholder('DiscriminatorBlock', 'eg3d_ext.discriminator.DiscriminatorBlock')
MinibatchStdLayer = _placeholder('MinibatchStdLayer', 'training.networks_stylegan2.MinibatchStdLayer')
DiscriminatorEpilogue = _placeholder('DiscriminatorEpilogue', 'eg3d_ext.discriminator.DiscriminatorEpilogue')

#----------------------------------------------------------------------------

_SKIP = ('self', 'x', 'img', 'force_fp32', 'update_emas')

def _params(module: torch.nn.Module) -> list:
    sig = inspect.signature(module.forward)
    return [p.name for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

def _first_w(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return t[:, 0] if t is not None and t.ndim == 3 else t # mapping nets may broadcast to [N, num_ws, C]

def _patch_vector(patch_params: Any, n: int, device: torch.device) -> torch.Tensor:
    """[scale_x, offset_x, offset_y] per sample (spec 4.2); the whole image (1, 0, 0) without patches."""
    if patch_params is None:
        return torch.tensor([[1.0, 0.0, 0.0]], device=device).expand(n, 3)
    if isinstance(patch_params, torch.Tensor):
        return patch_params
    return torch.cat([patch_params['scales'][:, :1], patch_params['offsets']], dim=1)

#----------------------------------------------------------------------------

class Discriminator(torch.nn.Module):
    """Attributes as in 3DGP: cfg, img_resolution, img_resolution_log2, block_resolutions, img_channels, scalar_enc,
    hyper_mod_mapping, b<res>, head_mapping, b4. Restored from pickles (no __init__ arguments of its own)."""

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        to_easydict = getattr(self.__dict__.get('cfg', None), 'to_easydict', None)
        if to_easydict is not None: # omegaconf stand-in -> EasyDict, as 3DGP's loader does for G.cfg
            self.cfg = to_easydict()

    def forward(self, img: torch.Tensor, c: torch.Tensor, patch_params: Any = None, camera_angles: Any = None,
                update_emas: bool = False, predict_feat: bool = False, **block_kwargs) -> Tuple[torch.Tensor, Any]:
        """img [N, img_channels, P, P], c [N, c_dim] class one-hot -> (logits [N], feats [N, D] or None).
        camera_angles is accepted and ignored (3DGP: camera_cond is off)."""
        N, dev = img.shape[0], img.device
        emb = self.scalar_enc(_patch_vector(patch_params, N, dev).to(torch.float32)) if self.scalar_enc is not None else None
        hyper = _first_w(self.hyper_mod_mapping(None, emb)) if self.hyper_mod_mapping is not None else None
        x = None
        for res in self.block_resolutions:
            block = getattr(self, f'b{res}')
            extra = [n for n in _params(block)[2:] if n not in _SKIP]
            kwargs = dict(block_kwargs)
            if hyper is not None and extra: # the hyper-modulation code goes to the block's first extra input
                kwargs[extra[0]] = hyper
            out = block(x, img, **kwargs)
            x, img = out if isinstance(out, tuple) else (out, img)
        cmap = None
        if self.head_mapping is not None:
            parts = ([c.to(torch.float32)] if c is not None and c.shape[1] > 0 else []) + ([emb] if emb is not None else [])
            cmap = _first_w(self.head_mapping(None, torch.cat(parts, dim=1)))
        names = _params(self.b4)
        kwargs = {k: v for k, v in dict(img=img, cmap=cmap, predict_feat=predict_feat).items() if k in names}
        if predict_feat and 'predict_feat' not in names:
            raise ValueError('predict_feat=True but this discriminator has no distillation head')
        out = self.b4(x, **kwargs)
        logits, feats = out if isinstance(out, tuple) else (out, None)
        return logits.reshape(N), feats

#----------------------------------------------------------------------------
