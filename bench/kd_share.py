"""Measures the knowledge-distillation head's share of the discriminator step (paper: ~1%).

Default: the real 3DGP D (256 px nominal, 64x64 RGB-D patches, cbase 32768, cmax 512, 1000 classes, KD 8192->512->2048).
`--tiny` measures the test-sized D instead, where the fixed-size head (FC C->2048) dominates the tiny trunk: that is
where the 10% figure came from, not a property of the real network. Both timings (alternated to cancel drift) and a
FLOP count (torch.utils.flop_counter, forward+backward) are reported; the FLOP share is the noise-free cross-check.
"""

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

def count_flops(D, x, c, pp, emb, kd: bool) -> int:
    """FLOPs of one real-image D forward+backward (adversarial loss, + KD when kd)."""
    from torch.utils.flop_counter import FlopCounterMode
    from eg3d_ext.distillation_head import kd_loss
    with FlopCounterMode(display=False) as counter:
        out = D(x, c, pp, predict_feat=kd)
        logits, feats = out if kd else (out, None)
        loss = torch.nn.functional.softplus(-logits).mean()
        if kd:
            loss = loss + kd_loss(feats, emb, pp[:, 0])
        loss.backward()
    D.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())

CONFIGS = dict( # name -> (Discriminator kwargs, per-GPU batch)
    real=(dict(c_dim=1000, img_resolution=256, patch_resolution=64, channel_base=32768, channel_max=512, kd_dim=2048), 16),
    tiny=(dict(c_dim=3, img_resolution=32, patch_resolution=16, channel_base=512, channel_max=16, kd_dim=2048, mbstd_group_size=2), 4),
)

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--tiny', action='store_true', help='Test-sized D instead of the real 3DGP D')
    p.add_argument('--batch', type=int, default=None, help='Per-GPU batch (3DGP: 16; tiny: 4)')
    p.add_argument('--c-dim', type=int, default=None, help='Classes (3DGP ImageNet: 1000)')
    p.add_argument('--cbase', type=int, default=None)
    p.add_argument('--cmax', type=int, default=None)
    p.add_argument('--iters', type=int, default=5)
    p.add_argument('--rounds', type=int, default=2, help='Alternations of KD-off / KD-on timing')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--json', default=None, help='Also write the result here')
    a = p.parse_args()
    from eg3d_ext.discriminator import Discriminator
    name = 'tiny' if a.tiny else 'real'
    kw, batch = CONFIGS[name]
    kw = dict(kw)
    for key, val in (('c_dim', a.c_dim), ('channel_base', a.cbase), ('channel_max', a.cmax)):
        if val is not None:
            kw[key] = val
    batch = a.batch or batch
    torch.manual_seed(0)
    dev = torch.device(a.device)
    D = Discriminator(**kw).to(dev).requires_grad_(True)
    P, cd = kw['patch_resolution'], kw['c_dim']
    x = torch.randn(batch, 4, P, P, device=dev)
    c = torch.nn.functional.one_hot(torch.randint(max(cd, 1), [batch]), max(cd, 1)).float().to(dev)[:, :cd]
    pp = torch.tensor([[0.5, 0.25, 0.25]], device=dev).repeat(batch, 1)
    emb = torch.randn(batch, 2048, device=dev)
    f_plain, f_kd = count_flops(D, x, c, pp, emb, False), count_flops(D, x, c, pp, emb, True)
    t_plain = t_kd = 0.0
    for _ in range(a.rounds): # alternate to cancel drift on a shared machine
        t_plain += time_d_step(D, x, c, pp, emb, False, a.iters) / a.rounds
        t_kd += time_d_step(D, x, c, pp, emb, True, a.iters) / a.rounds
    head = sum(p.numel() for n, p in D.named_parameters() if '.kd_' in n)
    total = sum(p.numel() for p in D.parameters())
    res = dict(config=name, device=str(dev), batch=batch, D_kwargs=kw, sec_d_step=t_plain, sec_d_step_with_kd=t_kd,
               kd_time_share=(t_kd - t_plain) / t_kd, flops_d_step=f_plain, flops_d_step_with_kd=f_kd,
               kd_flop_share=(f_kd - f_plain) / f_kd, kd_param_share=head / total)
    print(f'[{name}] D step {t_plain * 1e3:.1f} ms, with KD head {t_kd * 1e3:.1f} ms on {dev} (batch {batch}): KD share of '
          f'the real-image D step {100 * res["kd_time_share"]:.2f}% by time, {100 * res["kd_flop_share"]:.3f}% by FLOPs '
          f'({f_plain / 1e9:.1f} vs {f_kd / 1e9:.1f} GFLOP); head parameters {100 * res["kd_param_share"]:.1f}% of D')
    print(json.dumps(res))
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(res, f, indent=2)

if __name__ == '__main__':
    main()

#----------------------------------------------------------------------------
