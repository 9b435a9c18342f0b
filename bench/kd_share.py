"""The knowledge-distillation head's share of the discriminator step (paper: ~1%), by FLOPs and optionally by time.

Default: the real 3DGP D (256 px nominal, 64x64 RGB-D patches, cbase 32768, cmax 512, 1000 classes, KD head
8192 -> 512 -> 2048). `--tiny` measures the test-sized D instead, where the fixed-size head dominates the tiny trunk.
The FLOP count (torch.utils.flop_counter, one real-image D forward+backward, KD off vs on) is exact and noise-free;
the timing (KD off / on alternated to cancel drift) only resolves shares above the machine's timing noise (a few %
on a shared CPU), so `python -m bench` times it on a GPU only.

\b
python bench/kd_share.py                 # real widths, batch 16, FLOPs + timing (5 iterations x 2 rounds)
python bench/kd_share.py --iters 0       # FLOPs only
python bench/kd_share.py --tiny
"""

import argparse
import json
import os
import sys
import time
from typing import Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#----------------------------------------------------------------------------

CONFIGS = dict( # name -> (Discriminator kwargs, per-GPU batch)
    real=(dict(c_dim=1000, img_resolution=256, patch_resolution=64, channel_base=32768, channel_max=512, kd_dim=2048), 16),
    tiny=(dict(c_dim=3, img_resolution=32, patch_resolution=16, channel_base=512, channel_max=16, kd_dim=2048, mbstd_group_size=2), 4),
)

def setup(config: str = 'real', batch: Optional[int] = None, device: str = 'cpu', **overrides) -> tuple:
    """(D, inputs, D kwargs): the config's Discriminator (kwargs updated by `overrides`) with gradients on, and one
    batch of real-image inputs (RGB-D patches, one-hot classes, patch params, teacher embeddings)."""
    from eg3d_ext.discriminator import Discriminator
    kw, default_batch = CONFIGS[config]
    kw = dict(kw, **overrides)
    batch = batch or default_batch
    torch.manual_seed(0)
    dev = torch.device(device)
    D = Discriminator(**kw).to(dev).requires_grad_(True)
    P, cd = kw['patch_resolution'], kw['c_dim']
    x = torch.randn(batch, 4, P, P, device=dev)
    c = torch.nn.functional.one_hot(torch.randint(max(cd, 1), [batch]), max(cd, 1)).float().to(dev)[:, :cd]
    pp = torch.tensor([[0.5, 0.25, 0.25]], device=dev).repeat(batch, 1)
    emb = torch.randn(batch, 2048, device=dev)
    return D, (x, c, pp, emb), kw

def d_step(D, inputs, kd: bool) -> None:
    """One real-image D forward+backward: adversarial loss, + KD loss when kd."""
    from eg3d_ext.distillation_head import kd_loss
    x, c, pp, emb = inputs
    out = D(x, c, pp, predict_feat=kd)
    logits, feats = out if kd else (out, None)
    loss = torch.nn.functional.softplus(-logits).mean()
    if kd:
        loss = loss + kd_loss(feats, emb, pp[:, 0])
    D.zero_grad(set_to_none=True)
    loss.backward()

def count_flops(D, inputs, kd: bool) -> int:
    """FLOPs of `d_step`."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        d_step(D, inputs, kd)
    D.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())

def time_d_step(D, inputs, kd: bool, iters: int) -> float:
    """Mean seconds of `d_step` over `iters` after one warm-up step."""
    sync = torch.cuda.synchronize if inputs[0].is_cuda else (lambda: None)
    d_step(D, inputs, kd)
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        d_step(D, inputs, kd)
    sync()
    return (time.perf_counter() - t0) / iters

def measure(config: str = 'real', batch: Optional[int] = None, device: str = 'cpu', iters: int = 5, rounds: int = 2,
            **overrides) -> dict:
    """KD share of the real-image D step by FLOPs, by parameters and (iters > 0) by time."""
    D, inputs, kw = setup(config, batch, device, **overrides)
    f_off, f_on = count_flops(D, inputs, False), count_flops(D, inputs, True)
    head = sum(p.numel() for n, p in D.named_parameters() if '.kd_' in n)
    res = dict(config=config, device=device, batch=inputs[0].shape[0], D_kwargs=kw, flops_d_step=f_off,
               flops_d_step_with_kd=f_on, kd_flop_share=(f_on - f_off) / f_on,
               kd_param_share=head / sum(p.numel() for p in D.parameters()))
    if iters > 0:
        t_off = t_on = 0.0
        for _ in range(rounds): # alternate to cancel drift on a shared machine
            t_off += time_d_step(D, inputs, False, iters) / rounds
            t_on += time_d_step(D, inputs, True, iters) / rounds
        res.update(sec_d_step=t_off, sec_d_step_with_kd=t_on, kd_time_share=(t_on - t_off) / t_on)
    return res

#----------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--tiny', action='store_true', help='Test-sized D instead of the real 3DGP D')
    p.add_argument('--batch', type=int, default=None, help='Per-GPU batch (3DGP: 16; tiny: 4)')
    p.add_argument('--c-dim', type=int, default=None, help='Classes (3DGP ImageNet: 1000)')
    p.add_argument('--cbase', type=int, default=None)
    p.add_argument('--cmax', type=int, default=None)
    p.add_argument('--iters', type=int, default=5, help='Timed D steps per round (0: FLOPs only)')
    p.add_argument('--rounds', type=int, default=2, help='Alternations of KD-off / KD-on timing')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--json', default=None, help='Also write the result here')
    a = p.parse_args()
    overrides = {k: v for k, v in (('c_dim', a.c_dim), ('channel_base', a.cbase), ('channel_max', a.cmax)) if v is not None}
    res = measure('tiny' if a.tiny else 'real', a.batch, a.device, a.iters, a.rounds, **overrides)
    print(f'[{res["config"]}] KD share of the real-image D step on {res["device"]} (batch {res["batch"]}): '
          f'{100 * res["kd_flop_share"]:.3f}% by FLOPs ({res["flops_d_step"] / 1e9:.1f} vs '
          f'{res["flops_d_step_with_kd"] / 1e9:.1f} GFLOP); head parameters {100 * res["kd_param_share"]:.1f}% of D')
    if 'kd_time_share' in res:
        print(f'D step {res["sec_d_step"] * 1e3:.1f} ms, with KD head {res["sec_d_step_with_kd"] * 1e3:.1f} ms: '
              f'{100 * res["kd_time_share"]:.2f}% by time')
    print(json.dumps(res))
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(res, f, indent=2)

if __name__ == '__main__':
    main()

#----------------------------------------------------------------------------
