"""Keep freed CPU tensor memory inside the process heap (glibc `mallopt`) so big tensors stop page-faulting on reuse."""

import ctypes
import ctypes.util
import sys
from typing import Optional

# Why: glibc serves every allocation above 128 KiB with a fresh mmap and returns it to the kernel on free, so each
# training step re-faults every large activation page by page (measured on the EG3D 128 px CPU step: 24% of the step's
# CPU time; upsampling a [4, 96, 256, 256] tensor 650 -> 150 ms fwd+bwd). With mmap off and a high trim threshold the
# freed blocks are reused by the next step. Peak RSS stays within a few % (see docs/performance.md). Process-global and
# opt-in: the training loop or bench calls `tune()`; the same effect from the shell:
#   MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 python train.py ...

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_MMAP_THRESHOLD: 128 * 1024, _M_MMAP_MAX: 65536}
_libc: Optional[ctypes.CDLL] = None
active = False

#----------------------------------------------------------------------------

def _mallopt():
    global _libc
    if not sys.platform.startswith('linux'):
        return None
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        except OSError:
            return None
    return getattr(_libc, 'mallopt', None) # absent on musl

def tune(enable: bool = True) -> bool:
    """Enable (or, with enable=False, restore glibc's defaults for) heap reuse of large blocks.

    Returns True if glibc accepted the settings, False where mallopt is unavailable (non-Linux, musl): then nothing
    changes and everything still works, only slower on CPU.
    """
    global active
    fn = _mallopt()
    if fn is None:
        return False
    settings = {_M_MMAP_MAX: 0, _M_TRIM_THRESHOLD: 2 ** 31 - 1} if enable else _DEFAULTS
    ok = all(fn(ctypes.c_int(k), ctypes.c_int(v)) == 1 for k, v in settings.items())
    active = bool(enable and ok)
    return ok

#----------------------------------------------------------------------------
