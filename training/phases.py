"""Training phases (EG3D/StyleGAN2-ADA): optimizers with lazy regularisation, and one phase's gradient step."""

from typing import Any, Iterable, List, Optional, Sequence, Tuple

import torch

import dnnlib

#----------------------------------------------------------------------------
# Phases: <name>both (no lazy regularisation) or <name>main + <name>reg sharing one optimizer.

def setup_phases(specs: Sequence[Tuple[str, torch.nn.Module, dict, Optional[int]]]) -> Tuple[List[dnnlib.EasyDict], dict]:
    """[(name, module, opt_kwargs, reg_interval)] -> (phases, {name: optimizer})."""
    phases = []
    optimizers = dict()
    for name, module, opt_kwargs, reg_interval in specs:
        opt_kwargs = dnnlib.EasyDict(opt_kwargs)
        if 'betas' in opt_kwargs:
            opt_kwargs.betas = [float(b) for b in opt_kwargs.betas]  # torch 2.x Adam rejects mixed int/float betas
        if reg_interval is None:
            opt = dnnlib.util.construct_class_by_name(params=module.parameters(), **opt_kwargs)
            phases += [dnnlib.EasyDict(name=name + 'both', module=module, opt=opt, interval=1)]
        else:  # Lazy regularization: scale lr and betas so that the main+reg pair acts like one optimizer.
            mb_ratio = reg_interval / (reg_interval + 1)
            opt_kwargs.lr = opt_kwargs.lr * mb_ratio
            opt_kwargs.betas = [beta ** mb_ratio for beta in opt_kwargs.betas]
            opt = dnnlib.util.construct_class_by_name(module.parameters(), **opt_kwargs)
            phases += [dnnlib.EasyDict(name=name + 'main', module=module, opt=opt, interval=1)]
            phases += [dnnlib.EasyDict(name=name + 'reg', module=module, opt=opt, interval=reg_interval)]
        optimizers[name] = opt
    return phases, optimizers

#----------------------------------------------------------------------------

def run_phase(phase: dnnlib.EasyDict, loss: Any, chunks: Iterable[tuple], cur_nimg: int, num_gpus: int = 1,
              guard: Any = None) -> None:
    """Accumulate the loss gradients over the (real_img, real_c, extras, gen_z, gen_c) chunks, then step."""
    # Accumulate gradients.
    phase.opt.zero_grad(set_to_none=True)
    phase.module.requires_grad_(True)
    for real_img, real_c, extras, gen_z, gen_c in chunks:
        loss.accumulate_gradients(phase=phase.name, real_img=real_img, real_c=real_c, gen_z=gen_z, gen_c=gen_c,
                                  gain=phase.interval, cur_nimg=cur_nimg, **extras)
    phase.module.requires_grad_(False)

    # Update weights: average gradients over ranks in one flat all-reduce; NaN/Inf would poison Adam.
    with torch.autograd.profiler.record_function(phase.name + '_opt'):
        params = [param for param in phase.module.parameters() if param.numel() > 0 and param.grad is not None]
        if len(params) > 0:
            flat = torch.cat([param.grad.flatten() for param in params])
            if num_gpus > 1:
                torch.distributed.all_reduce(flat)
                flat /= num_gpus
            if guard is not None:
                guard.observe_grads(flat)
            torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
            grads = flat.split([param.numel() for param in params])
            for param, grad in zip(params, grads):
                param.grad = grad.reshape(param.shape)
        phase.opt.step()

#----------------------------------------------------------------------------
