"""Measures the knowledge-distillation head's share of the discriminator step on the 3DGP D config (paper: ~1%)."""

import argparse
import json
import time

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#----------------------------------------------------------------------------

def time_d_step(D, x, c, pp, emb, kd: bool, iters: int) -> float:
    """Mean seconds of one real-image D forward+backward (adversarial loss, + KD loss when kd)."""
    from eg3d_ext.distillation_head import kd_loss
    def step():
        out = D(x, c, pp, predict_feat=kd)
        logits, feats = out if kd else (out, None)
        loss = torch.nn.functional.softplus(-logits).mean()
        if kd:
            loss = loss + kd_loss(feats, emb, pp[:, 0])
        D.zero_grad(set_to_none=True)
        loss.backward()
    step() # warm-up
    if x.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters

def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--batch', type=int, default=16, help='Per-GPU batch (3DGP: 16)')
    p.add_argument('--c-dim', type=int, default=1000)
    p.add_argument('--cbase', type=int, default=32768)
    p.add_argument('--cmax', type=int, default=512)
    p.add_argument('--iters', type=int, default=5)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--json', default=None, help='Also write the result here')
    a = p.parse_args()
    from eg3d_ext.discriminator import Discriminator
    torch.manual_seed(0)
    dev = torch.device(a.device)
    D = Discriminator(c_dim=a.c_dim, img_resolution=256, patch_resolution=64, channel_base=a.cbase, channel_max=a.cmax,
                      kd_dim=2048).to(dev).requires_grad_(True)
    x = torch.randn(a.batch, 4, 64, 64, device=dev)
    c = torch.nn.functional.one_hot(torch.randint(max(a.c_dim, 1), [a.batch]), max(a.c_dim, 1)).float().to(dev)[:, :a.c_dim]
    pp = torch.tensor([[0.5, 0.25, 0.25]], device=dev).repeat(a.batch, 1)
    emb = torch.randn(a.batch, 2048, device=dev)
    t_plain = time_d_step(D, x, c, pp, emb, False, a.iters)
    t_kd = time_d_step(D, x, c, pp, emb, True, a.iters)
    head = sum(p.numel() for n, p in D.named_parameters() if '.kd_' in n)
    total = sum(p.numel() for p in D.parameters())
    res = dict(device=str(dev), batch=a.batch, cbase=a.cbase, cmax=a.cmax, c_dim=a.c_dim, sec_d_step=t_plain,
               sec_d_step_with_kd=t_kd, kd_time_share=(t_kd - t_plain) / t_kd, kd_param_share=head / total)
    print(f'D step {t_plain * 1e3:.1f} ms, with KD head {t_kd * 1e3:.1f} ms on {dev}: KD share of the real-image D step '
          f'{100 * res["kd_time_share"]:.2f}% (parameters {100 * res["kd_param_share"]:.1f}% of D)')
    print(json.dumps(res))
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(res, f, indent=2)

if __name__ == '__main__':
    main()

#----------------------------------------------------------------------------
