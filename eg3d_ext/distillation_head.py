"""Knowledge distillation into the discriminator (3DGP): loss between the D head's prediction and teacher features.
The head itself lives in eg3d_ext/discriminator.py (DiscriminatorEpilogue.kd_fc/kd_out) so that D pickles stay
self-contained; teacher features come from dataset embeddings or eg3d_ext.datasets.embeddings.Teacher."""

import torch
import torch.nn.functional as F

#----------------------------------------------------------------------------

def kd_loss(pred: torch.Tensor, target: torch.Tensor, patch_scales: torch.Tensor, loss_type: str = 'l2') -> torch.Tensor:
    """Per-sample distance reweighted by patch size, averaged (spec 4.5):
    l2: d_i = ||pred_i - target_i||_2 (Euclidean norm, not squared); kl: KL(softmax(target) || softmax(pred)).
    w_i = s_i / (mean_j s_j + 1e-8); returns mean_i w_i d_i (the caller multiplies by lambda_kd(t))."""
    if pred.shape != target.shape:
        raise ValueError(f'kd_loss: prediction {list(pred.shape)} and target {list(target.shape)} differ')
    target = target.to(pred.dtype).detach()
    if loss_type == 'l2':
        d = (pred - target).norm(dim=1)
    elif loss_type == 'kl':
        log_p = F.log_softmax(target, dim=1)
        d = (log_p.exp() * (log_p - F.log_softmax(pred, dim=1))).sum(dim=1)
    else:
        raise ValueError(f"kd_loss: loss_type must be 'l2' or 'kl', got {loss_type!r}")
    s = patch_scales.to(pred.dtype)
    w = s / (s.mean() + 1e-8)
    return (w * d).mean()

#----------------------------------------------------------------------------
