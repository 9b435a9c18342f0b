"""Loading 3DGP / EpiGRAF network pickles: `src.*` module aliases, an omegaconf stand-in and config conversion.

3DGP runs from its experiment directory with both `src.*` and bare `training.*` importable, so its pickles name
`src.torch_utils.persistence._reconstruct_persistent_obj`, `src.dnnlib.util.TensorGroup`, omegaconf config nodes and
the non-persistent `training.networks_discriminator.Discriminator`; their embedded sources import plain functions from
`src.training.*` (eg3d-compatibility.md a.7). `install()` makes all of these resolve to this package:

* legacy.load_network_pkl's find_class aliases (pickle globals), and
* a meta-path finder, appended *last* to sys.meta_path, that serves `src.*` (and `omegaconf` when it is not
  installed) to `import` statements inside embedded sources. Being last, a real `src` package or omegaconf wins.
* a persistence import hook that turns stand-in omegaconf configs in persistent objects' state into EasyDicts (what
  3DGP's own loader does with `EasyDict.init_recursively(G.cfg)`), and
* a load hook that wraps the restored generators (G, G_ema) in `generator.LegacyGenerator`, which gives them this
  repo's generator interface for gen_samples, gen_videos, calc_metrics and the viewer.

CUDA storages in 3DGP pickles (its loop does not move modules to the CPU) are mapped to the CPU by legacy.py's
`torch.storage._load_from_bytes` substitute.
"""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import Dict, Optional

#----------------------------------------------------------------------------
# Module map: 3DGP/EpiGRAF name (prefix) -> module of this codebase. Longest prefix wins.

_C = 'eg3d_ext.compat'
MODULE_MAP: Dict[str, str] = {
    'src.torch_utils':                      'torch_utils',
    'src.dnnlib':                           f'{_C}.dnnlib',
    'src.dnnlib.util':                      f'{_C}.dnnlib',
    'src.training.layers':                  f'{_C}.layers',
    'src.training.rendering_utils':         f'{_C}.rendering_utils',
    'src.training.training_utils':          f'{_C}.training_utils',
    'src.training.tri_plane_renderer':      f'{_C}.tri_plane_renderer',
    'src.training.networks_stylegan2':      f'{_C}.networks',
    'src.training.networks_camera_adaptor': f'{_C}.networks',
    'src.training.networks_depth_adaptor':  f'{_C}.networks',
    'src.training.networks_epigraf':        f'{_C}.networks',
    'src.training.networks_discriminator':  f'{_C}.discriminator',
}
PACKAGES = ('src', 'src.training') # namespace-only packages: nothing of their own, just a parent for the above
CLASS_MAP = {('training.networks_discriminator', 'Discriminator'): f'{_C}.discriminator.Discriminator'}
OMEGACONF_MODULES = ('omegaconf', 'omegaconf.dictconfig', 'omegaconf.listconfig', 'omegaconf.base', 'omegaconf.nodes')

def has_real_omegaconf() -> bool:
    spec = None
    for finder in sys.meta_path:
        if isinstance(finder, _AliasFinder):
            continue
        find = getattr(finder, 'find_spec', None)
        spec = find('omegaconf', None) if find is not None else None
        if spec is not None:
            break
    return spec is not None

def target_module(name: str) -> Optional[str]:
    """Module of this codebase that serves `name`, or None."""
    if name in PACKAGES:
        return None
    for old in sorted(MODULE_MAP, key=len, reverse=True):
        if name == old or name.startswith(old + '.'):
            return MODULE_MAP[old] + name[len(old):]
    if name in OMEGACONF_MODULES and not has_real_omegaconf():
        return f'{_C}.omegaconf'
    return None

#----------------------------------------------------------------------------
# Import support for embedded sources.

class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: Optional[str]):
        self.target = target
    def create_module(self, spec):
        if self.target is None: # empty namespace package
            module = types.ModuleType(spec.name)
            module.__path__ = []
            return module
        target = importlib.import_module(self.target)
        if spec.submodule_search_locations is not None and not hasattr(target, '__path__'):
            # e.g. src.dnnlib (a module here) must be a package for src.dnnlib.util: a proxy with its names.
            module = types.ModuleType(spec.name)
            module.__dict__.update({k: v for k, v in target.__dict__.items() if not k.startswith('__')})
            module.__path__ = []
            return module
        return target # the same module object under a second name
    def exec_module(self, module):
        pass

class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in PACKAGES:
            return importlib.machinery.ModuleSpec(fullname, _AliasLoader(None), is_package=True)
        dest = target_module(fullname)
        if dest is None:
            return None
        has_children = any(name.startswith(fullname + '.') for name in MODULE_MAP)
        is_package = has_children or importlib.util.find_spec(dest).submodule_search_locations is not None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(dest), is_package=is_package)

#----------------------------------------------------------------------------
# Config conversion hook for persistent objects.

def _convert_configs_hook(meta: dict) -> dict:
    from . import omegaconf as oc
    state = meta.get('state', None)
    if isinstance(state, dict):
        for d in [state, state.get('_init_kwargs', None)]:
            for key, value in (list(d.items()) if isinstance(d, dict) else []):
                if isinstance(value, oc.Container):
                    d[key] = value.to_easydict()
        if isinstance(state.get('_init_args', None), (list, tuple)):
            state['_init_args'] = type(state['_init_args'])(v.to_easydict() if isinstance(v, oc.Container) else v
                                                            for v in state['_init_args'])
    return meta

#----------------------------------------------------------------------------

_installed = False

def install() -> bool:
    """Register aliases and the load hook with legacy.py, the import finder and the config hook (idempotent). False
    if legacy.py offers no such hooks."""
    global _installed
    if _installed:
        return True
    try:
        import legacy
    except ImportError:
        return False
    if not all(hasattr(legacy, name) for name in ('register_module_alias', 'register_class_alias', 'register_load_hook')):
        return False
    for old, new in MODULE_MAP.items():
        legacy.register_module_alias(old, new)
    for (module, name), target in CLASS_MAP.items():
        legacy.register_class_alias(module, name, target)
    if not has_real_omegaconf():
        for name in OMEGACONF_MODULES:
            legacy.register_module_alias(name, f'{_C}.omegaconf')
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
    from torch_utils import persistence
    persistence.import_hook(_convert_configs_hook)
    from .generator import adapt_generators
    legacy.register_load_hook(adapt_generators)
    _installed = True
    return True

#----------------------------------------------------------------------------
