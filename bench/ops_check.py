"""Check each custom op's CUDA path against its reference on a GPU (forward, 1st and 2nd gradients) and time both.

Usage (on a CUDA machine, from the repository root):
    python bench/ops_check.py --out bench/results/ops_check.json [--only upfirdn2d] [--iters 20]

Cases are plain `Case` records produced by the functions in `CASE_FACTORIES`; plugins are built through
`PLUGINS` (op name -> build function returning True on success). To cover another op, write a
`<op>_cases()` function and append it to `CASE_FACTORIES`, and add its `_plugin.ready` to `PLUGINS`.
Exits with status 1 if any case fails or any plugin does not build.
"""

import dataclasses
import json
import os
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import click
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from torch_utils.ops import bias_act, upfirdn2d  # noqa: E402

#----------------------------------------------------------------------------

@dataclasses.dataclass
class Case:
    op: str                                         # key of PLUGINS
    name: str                                       # short description for the table
    inputs: Callable[[torch.device], Dict[str, torch.Tensor]]  # named input tensors on the device
    fn: Callable[..., torch.Tensor]                 # fn(impl, **inputs) -> output tensor
    grad_inputs: Sequence[str] = ('x',)             # inputs that get gradients
    order: int = 2                                  # 0 = forward only, 1, 2 = up to second-order gradients
    rtol: float = 1e-4                              # pass if |cuda - ref| <= atol + rtol * max|ref| ...
    atol: float = 1e-5
    max_bad_frac: float = 0.0                       # ... for all but this fraction of elements (kinks, clamps)
    check: Optional[Callable[[torch.Tensor, Dict[str, torch.Tensor]], Optional[str]]] = None  # check(y_cuda, inputs) -> error

def _randn(shape, device, dtype=torch.float32, scale=1.0, seed=0, channels_last=False):
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(shape, generator=g, device=device, dtype=torch.float32).mul_(scale).to(dtype)
    return x.to(memory_format=torch.channels_last) if channels_last else x

def _same_layout(y, inputs):
    cl = lambda t: t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    x = inputs['x']
    return None if cl(y) == cl(x) else f'CUDA output layout differs from input (channels_last {cl(y)} vs {cl(x)})'

#----------------------------------------------------------------------------
# bias_act cases.

def bias_act_cases() -> List[Case]:
    cases = []
    def add(name, shape, act, dim=1, dtype=torch.float32, cl=False, order=2, rtol=1e-4, bad=0.0, **kw):
        def inputs(dev, shape=shape, dim=dim, dtype=dtype, cl=cl):
            return dict(x=_randn(shape, dev, dtype, 2.0, 1, cl), b=_randn([shape[dim]], dev, dtype, 0.5, 2))
        fn = lambda impl, x, b, act=act, dim=dim, kw=kw: bias_act.bias_act(x, b, dim=dim, act=act, impl=impl, **kw)
        cases.append(Case('bias_act', name, inputs, fn, ('x', 'b'), order, rtol, 1e-5 if dtype != torch.float16 else 1e-3,
                          bad, _same_layout))
    for act in bias_act.activation_funcs:
        add(f'{act} [8,64,32,32]', [8, 64, 32, 32], act)
    add('lrelu clamp=0.5', [8, 64, 32, 32], 'lrelu', clamp=0.5, bad=1e-5)
    add('swish gain=0.7 clamp=1', [8, 64, 32, 32], 'swish', gain=0.7, clamp=1.0, bad=1e-5)
    add('linear gain=2 clamp=0.8 (ToRGB)', [8, 3, 64, 64], 'linear', gain=2.0, clamp=0.8, bad=1e-5)
    add('lrelu [1024,512] (FC)', [1024, 512], 'lrelu')
    add('tanh dim=2 [16,32,512]', [16, 32, 512], 'tanh', dim=2)
    add('lrelu fp16 channels-last clamp=256', [4, 128, 64, 64], 'lrelu', dtype=torch.float16, cl=True,
        rtol=2e-3, clamp=256.0, bad=1e-5)
    add('sigmoid fp16', [4, 32, 64, 64], 'sigmoid', dtype=torch.float16, rtol=2e-3)
    add('softplus float64', [2, 16, 8, 8], 'softplus', dtype=torch.float64, rtol=1e-9)
    return cases

#----------------------------------------------------------------------------
# upfirdn2d cases (the wrappers are what the networks call).

def upfirdn2d_cases() -> List[Case]:
    cases = []
    f4 = [1, 3, 3, 1]
    def add(name, shape, call, taps=f4, dtype=torch.float32, cl=False, order=2, rtol=1e-4, separable=None):
        def inputs(dev, shape=shape, dtype=dtype, cl=cl):
            return dict(x=_randn(shape, dev, dtype, 1.0, 3, cl),
                        f=upfirdn2d.setup_filter(taps, device=dev, separable=separable))
        fn = lambda impl, x, f, call=call: call(x, f, impl)
        cases.append(Case('upfirdn2d', name, inputs, fn, ('x',), order, rtol, 1e-5 if dtype != torch.float16 else 1e-3,
                          0.0, _same_layout if cl else None))
    U = upfirdn2d
    add('upsample2d [4,64,32,32]', [4, 64, 32, 32], lambda x, f, i: U.upsample2d(x, f, impl=i))
    add('downsample2d [4,64,64,64]', [4, 64, 64, 64], lambda x, f, i: U.downsample2d(x, f, impl=i))
    add('filter2d [4,64,64,64]', [4, 64, 64, 64], lambda x, f, i: U.filter2d(x, f, impl=i))
    add('up2 down2 pad1 flip gain3', [2, 16, 31, 17],
        lambda x, f, i: U.upfirdn2d(x, f, up=2, down=2, padding=1, flip_filter=True, gain=3.0, impl=i))
    add('per-axis up[1,3] down[2,1] pad[3,-1,-2,2]', [2, 8, 20, 24],
        lambda x, f, i: U.upfirdn2d(x, f, up=[1, 3], down=[2, 1], padding=[3, -1, -2, 2], impl=i))
    add('separable 12-tap up2', [4, 32, 32, 32], lambda x, f, i: U.upsample2d(x, f, impl=i),
        taps=np.hanning(14)[1:-1], separable=True)
    add('separable 1-tap gain2', [2, 8, 16, 16], lambda x, f, i: U.upfirdn2d(x, f, gain=2.0, impl=i),
        taps=[2.0], separable=True)
    add('none filter down3', [2, 8, 16, 16], lambda x, f, i: U.upfirdn2d(x, None, down=3, impl=i))
    add('upsample2d fp16 channels-last', [4, 128, 64, 64], lambda x, f, i: U.upsample2d(x, f, impl=i),
        dtype=torch.float16, cl=True, rtol=2e-3)
    add('filter2d [1,3,512,512] (blur)', [1, 3, 512, 512], lambda x, f, i: U.filter2d(x, f, impl=i), order=1)
    return cases

#----------------------------------------------------------------------------
# Registry of what to build and check. Other ops append here.

PLUGINS: Dict[str, Callable[[], bool]] = {
    'bias_act': bias_act._plugin.ready,
    'upfirdn2d': upfirdn2d._plugin.ready,
}
CASE_FACTORIES: List[Callable[[], List[Case]]] = [bias_act_cases, upfirdn2d_cases]

#----------------------------------------------------------------------------
# filtered_lrelu (fused CUDA kernel), conv2d_gradfix and grid_sample_gradfix (custom autograd vs plain torch.nn.functional;
# 'cuda' = custom path enabled, 'ref' = disabled). Added by the conv/filtered_lrelu ops owner.

from torch_utils.ops import conv2d_gradfix, filtered_lrelu, grid_sample_gradfix  # noqa: E402

def filtered_lrelu_cases() -> List[Case]:
    cases = []
    def add(name, shape, up, down, padding, taps_u, taps_d, dtype=torch.float32, clamp=None, rtol=1e-4, cl=False,
            flip=False, bad=1e-4):
        def inputs(dev, shape=shape, dtype=dtype, cl=cl):
            sep = lambda t: upfirdn2d.setup_filter(t, device=dev, separable=len(t) >= 8) if t is not None else None
            filters = dict(fu=sep(taps_u), fd=sep(taps_d))
            return dict(x=_randn(shape, dev, dtype, 1.0, 5, cl), b=_randn([shape[1]], dev, dtype, 0.2, 6),
                        **{k: v for k, v in filters.items() if v is not None})  # inputs must be tensors
        fn = lambda impl, x, b, fu=None, fd=None, k=(up, down, padding, clamp, flip): filtered_lrelu.filtered_lrelu(
            x, fu, fd, b, up=k[0], down=k[1], padding=k[2], clamp=k[3], flip_filter=k[4], impl=impl)
        # Kinks/clamps: a few samples may land on the other side of the branch in fp32 vs the separable reference.
        cases.append(Case('filtered_lrelu', name, inputs, fn, ('x', 'b'), 2, rtol,
                          1e-5 if dtype != torch.float16 else 1e-3, bad))
    k12 = list(np.kaiser(12, 4.0))
    add('SG3 up2 down2 12-tap pad10 [4,64,36,36]', [4, 64, 36, 36], 2, 2, 10, k12, k12)
    add('SG3 up2 down2 clamp256 fp16', [4, 64, 36, 36], 2, 2, 10, k12, k12, dtype=torch.float16, clamp=256.0,
        rtol=3e-3, bad=1e-2)  # fp16 rounding moves more samples across the kink
    add('up4 down2 pad[7,6,5,8] flip', [2, 32, 20, 24], 4, 2, [7, 6, 5, 8], k12, [1, 3, 3, 1], flip=True)
    add('up1 down1 no filters clamp0.5', [4, 32, 32, 32], 1, 1, 0, None, None, clamp=0.5)
    add('channels-last up2 down1 [2,16,16,16]', [2, 16, 16, 16], 2, 1, 6, [1, 3, 3, 1], None, cl=True)
    add('float64 up2 down2', [2, 8, 12, 12], 2, 2, 4, [1, 3, 3, 1], [1, 2, 1], dtype=torch.float64, rtol=1e-9)
    return cases

def _with_flag(module, impl, fn):
    old = module.enabled
    module.enabled = (impl == 'cuda')
    try:
        return fn()
    finally:
        module.enabled = old

def conv2d_gradfix_cases() -> List[Case]:
    cases = []
    def add(name, xshape, wshape, dtype=torch.float32, r1=False, transpose=False, rtol=1e-4, **kw):
        def inputs(dev, xshape=xshape, wshape=wshape, dtype=dtype):
            return dict(x=_randn(xshape, dev, dtype, 1.0, 7), w=_randn(wshape, dev, dtype, 0.1, 8))
        def fn(impl, x, w, kw=kw, r1=r1, transpose=transpose):
            op = conv2d_gradfix.conv_transpose2d if transpose else conv2d_gradfix.conv2d
            if not r1:
                return _with_flag(conv2d_gradfix, impl, lambda: op(x, w, **kw))
            # R1-style: gradient of sum(conv^2) wrt x with create_graph, so fwd+bwd timing = the double backward.
            def r1_grad():
                xx = x if x.requires_grad else x.detach().requires_grad_(True)
                with conv2d_gradfix.no_weight_gradients():
                    return torch.autograd.grad(op(xx, w, **kw).square().sum(), xx, create_graph=True)[0]
            return _with_flag(conv2d_gradfix, impl, r1_grad)
        cases.append(Case('conv2d_gradfix', name, inputs, fn, ('x', 'w'), 1 if r1 else 2, rtol,
                          1e-5 if dtype != torch.float16 else 1e-2))
    add('3x3 pad1 [8,128,64,64]', [8, 128, 64, 64], [128, 128, 3, 3], padding=1)
    add('3x3 stride2 groups2 fp16', [8, 128, 64, 64], [128, 64, 3, 3], dtype=torch.float16, stride=2, padding=1,
        groups=2, rtol=3e-3)
    add('transpose stride2 [4,64,32,32]', [4, 64, 32, 32], [64, 32, 3, 3], transpose=True, stride=2)
    add('R1 double backward 3x3 fp16 [8,256,32,32]', [8, 256, 32, 32], [256, 256, 3, 3], dtype=torch.float16,
        r1=True, padding=1, rtol=3e-3)
    add('R1 double backward 3x3 fp32 [8,128,64,64]', [8, 128, 64, 64], [128, 128, 3, 3], r1=True, padding=1)
    return cases

def grid_sample_gradfix_cases() -> List[Case]:
    def inputs(dev):
        return dict(x=_randn([4, 32, 64, 64], dev, torch.float32, 1.0, 9),
                    grid=_randn([4, 48, 48, 2], dev, torch.float32, 0.6, 10))
    fn = lambda impl, x, grid: _with_flag(grid_sample_gradfix, impl, lambda: grid_sample_gradfix.grid_sample(x, grid))
    # Plain F.grid_sample has no double backward, so the comparison stops at first order.
    return [Case('grid_sample_gradfix', 'bilinear [4,32,64,64] grid 48x48', inputs, fn, ('x', 'grid'), 1, 1e-4, 1e-5)]

PLUGINS['filtered_lrelu'] = filtered_lrelu._plugin.ready
PLUGINS['conv2d_gradfix'] = lambda: True  # No plugin: pure PyTorch custom autograd.
PLUGINS['grid_sample_gradfix'] = lambda: True
CASE_FACTORIES += [filtered_lrelu_cases, conv2d_gradfix_cases, grid_sample_gradfix_cases]

#----------------------------------------------------------------------------

def _evaluate(case: Case, impl: str, inputs: Dict[str, torch.Tensor], seeds) -> List[torch.Tensor]:
    """Output, then first gradients, then second gradients (of a fixed random projection)."""
    leaf = {k: v.detach().clone().requires_grad_(k in case.grad_inputs and case.order > 0) for k, v in inputs.items()}
    y = case.fn(impl, **leaf)
    vals = [y]
    if case.order >= 1:
        wrt = [leaf[k] for k in case.grad_inputs]
        dy = _randn(y.shape, y.device, y.dtype, 1.0, seeds[0])
        gs = torch.autograd.grad(y, wrt, dy, create_graph=case.order >= 2, allow_unused=True)
        gs = [torch.zeros_like(w) if g is None else g for g, w in zip(gs, wrt)]
        vals += gs
        if case.order >= 2:
            s = sum((g.float() * _randn(g.shape, g.device, torch.float32, 1.0, seeds[1] + i)).sum() for i, g in enumerate(gs))
            ggs = torch.autograd.grad(s, wrt, allow_unused=True) if s.requires_grad else [None] * len(wrt)
            vals += [torch.zeros_like(w) if g is None else g for g, w in zip(ggs, wrt)]
    return [v.detach() for v in vals]

def _compare(case: Case, c: torch.Tensor, r: torch.Tensor) -> dict:
    if c.shape != r.shape or c.dtype != r.dtype:
        return dict(ok=False, err=float('inf'), msg=f'shape/dtype {tuple(c.shape)}/{c.dtype} vs {tuple(r.shape)}/{r.dtype}')
    c64, r64 = c.double(), r.double()
    scale = r64.abs().max().item() if r64.numel() else 0.0
    diff = (c64 - r64).abs()
    bad = (diff > case.atol + case.rtol * scale) | (torch.isfinite(c64) != torch.isfinite(r64))
    frac = bad.float().mean().item() if bad.numel() else 0.0
    err = (diff.max().item() / max(scale, 1e-30)) if diff.numel() else 0.0
    return dict(ok=frac <= case.max_bad_frac, err=err, bad_frac=frac)

def _time_ms(fn: Callable[[], None], iters: int) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))

def run_case(case: Case, device: torch.device, iters: int) -> dict:
    inputs = case.inputs(device)
    seeds = (11, 23)
    vals = {impl: _evaluate(case, impl, inputs, seeds) for impl in ('cuda', 'ref')}
    labels = ['fwd'] + [f'grad1_{k}' for k in case.grad_inputs][:len(vals['cuda']) - 1]
    labels += [f'grad2_{k}' for k in case.grad_inputs][:max(len(vals['cuda']) - len(labels), 0)]
    comps = {lab: _compare(case, c, r) for lab, c, r in zip(labels, vals['cuda'], vals['ref'])}
    msg = case.check(vals['cuda'][0], inputs) if case.check is not None else None
    res = dict(op=case.op, name=case.name, ok=all(v['ok'] for v in comps.values()) and msg is None,
               compare=comps, check=msg)
    if iters > 0:
        for impl in ('cuda', 'ref'):
            x = {k: v.detach() for k, v in inputs.items()}
            res[f'{impl}_fwd_ms'] = _time_ms(lambda: case.fn(impl, **x), iters)
            if case.order >= 1:
                def fwd_bwd(impl=impl):
                    leaf = {k: v.detach().requires_grad_(k in case.grad_inputs) for k, v in inputs.items()}
                    y = case.fn(impl, **leaf)
                    torch.autograd.grad(y, [leaf[k] for k in case.grad_inputs], torch.ones_like(y), allow_unused=True)
                res[f'{impl}_fwdbwd_ms'] = _time_ms(fwd_bwd, iters)
    return res

#----------------------------------------------------------------------------

@click.command()
@click.option('--out', help='JSON output path', default='bench/results/ops_check.json', show_default=True)
@click.option('--only', help='Run only cases whose op or name contains this', default=None)
@click.option('--iters', help='Timing iterations per case (0 = no timing)', type=int, default=20, show_default=True)
def main(out: str, only: Optional[str], iters: int):
    """Compare CUDA vs reference for every custom op case; print a table and write JSON."""
    if not torch.cuda.is_available():
        raise click.ClickException('ops_check needs a CUDA device')
    if os.environ.get('EG3D_OPS_IMPL', '').lower() == 'ref':
        raise click.ClickException('EG3D_OPS_IMPL=ref forces the reference path; unset it to check the CUDA kernels')
    device = torch.device('cuda')
    cases = [c for f in CASE_FACTORIES for c in f()]
    if only:
        cases = [c for c in cases if only in c.op or only in c.name]
    builds = {}
    for op in sorted({c.op for c in cases}):
        t0 = time.time()
        builds[op] = dict(ok=bool(PLUGINS[op]()), seconds=round(time.time() - t0, 1))
        print(f'build {op}: {"ok" if builds[op]["ok"] else "FAILED"} ({builds[op]["seconds"]} s)', flush=True)

    results = []
    hdr = f'{"op":<10} {"case":<44} {"ok":<4} {"max rel err (fwd/g1/g2)":<30} {"fwd ms cuda/ref":<18} {"fwd+bwd ms cuda/ref":<18}'
    print(hdr + '\n' + '-' * len(hdr))
    for case in cases:
        if not builds[case.op]['ok']:
            res = dict(op=case.op, name=case.name, ok=False, check='plugin did not build')
        else:
            try:
                res = run_case(case, device, iters)
            except Exception as e: # report and go on with the other cases
                res = dict(op=case.op, name=case.name, ok=False, check=f'{type(e).__name__}: {e}')
        results.append(res)
        errs = '/'.join(f'{v["err"]:.1e}' for v in res.get('compare', {}).values())
        t = lambda k: f'{res[k]:.3f}' if k in res else '-'
        print(f'{case.op:<10} {case.name[:44]:<44} {"ok" if res["ok"] else "FAIL":<4} {errs:<30} '
              f'{t("cuda_fwd_ms") + "/" + t("ref_fwd_ms"):<18} {t("cuda_fwdbwd_ms") + "/" + t("ref_fwdbwd_ms"):<18}'
              + (f'  {res["check"]}' if res.get('check') else ''), flush=True)

    summary = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, cuda=torch.version.cuda,
                   builds=builds, cases=results, passed=sum(r['ok'] for r in results), total=len(results))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + '.tmp'
    with open(tmp, 'w') as fp:
        json.dump(summary, fp, indent=2)
    os.replace(tmp, out)
    print(f'{summary["passed"]}/{summary["total"]} cases passed; wrote {out}')
    if summary['passed'] != summary['total'] or not all(b['ok'] for b in builds.values()):
        sys.exit(1)

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
