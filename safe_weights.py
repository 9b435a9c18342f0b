"""Read and write network files without running code from them: the weights-only .safetensors format (networks
rebuilt by allow-listed class name) and inspection of a pickle through inert stand-ins."""

import collections
import hashlib
import importlib
import inspect
import json
import pickle
import re
import struct
import sys
from typing import Any

import numpy as np
import torch

import dnnlib
from dnnlib import registry

#----------------------------------------------------------------------------
# Weights-only format: <name>.safetensors = tensors 'G.<param>', 'D.<param>', 'G_ema.<param>', 'augment_pipe.<param>'
# + metadata['eg3d'] = JSON {format, version, networks: {key: {class_name, init_args, init_kwargs, attrs}},
# training_set_kwargs}. Loading never unpickles: networks are constructed by class name, and only classes under the
# SAFE_PREFIXES packages or registered as kind 'network' may be named (also inside the constructor arguments).

SAFE_FORMAT, SAFE_VERSION = 'eg3d-networks', 1
SAFE_PREFIXES = ('training.', 'eg3d_ext.')
_SAFE_KEYS = ('G', 'D', 'G_ema', 'augment_pipe')
_CANDIDATE_MODULES = ('training.triplane', 'training.networks_stylegan2', 'training.networks_stylegan3',
                      'training.dual_discriminator', 'training.superresolution', 'training.augment', 'eg3d_ext.generator',
                      'eg3d_ext.discriminator', 'eg3d_ext.camera_generator', 'eg3d_ext.depth_adaptor', 'eg3d_ext.distillation_head')
_DOTTED = re.compile(r'[A-Za-z_]\w*(\.[A-Za-z_]\w*)+')

def _class_names_in(src: str) -> set:
    return set(re.findall(r'^class\s+(\w+)', src, flags=re.M))

def canonical_class_name(module: torch.nn.Module) -> str:
    """Importable 'package.module.Class' of a network, also for persistent classes rebuilt from a pickle's source."""
    cls = type(module)
    mod_name = cls.__bases__[0].__module__ if hasattr(cls, '_orig_class_name') else cls.__module__  # persistent wrapper
    if not mod_name.startswith('_imported_module_'):
        return f'{mod_name}.{cls.__name__}'
    name, src = getattr(cls, '_orig_class_name', cls.__name__), getattr(cls, '_orig_module_src', '') or ''
    best, best_score = None, -1.0
    for mod_name in list(_CANDIDATE_MODULES) + [m for m in sys.modules if m.startswith(SAFE_PREFIXES)]:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        if not isinstance(getattr(mod, name, None), type) or not _accepts(getattr(mod, name), module):
            continue
        ours, theirs = _class_names_in(getattr(mod, '__source__', '') or _module_source(mod)), _class_names_in(src)
        score = len(ours & theirs) / max(len(ours | theirs), 1)
        if score > best_score:
            best, best_score = f'{mod_name}.{name}', score
    if best is None:
        raise ValueError(f'no importable class for {name!r} (from an embedded pickle module) under {", ".join(SAFE_PREFIXES)}')
    return best

def _accepts(cls: type, module: torch.nn.Module) -> bool:
    """Whether `cls` can be constructed with the arguments `module` was built with (a same-named class of another
    code base, e.g. 3DGP's Generator vs ours, cannot)."""
    cls = cls.__bases__[0] if hasattr(cls, '_orig_class_name') else cls # persistent wrapper: (*args, **kwargs)
    if not issubclass(cls, torch.nn.Module): # e.g. eg3d_ext.compat stand-ins that only name 3DGP classes
        return False
    try:
        inspect.signature(cls).bind(*getattr(module, 'init_args', ()), **getattr(module, 'init_kwargs', {}))
        return True
    except TypeError:
        return False

def _module_source(mod) -> str:
    try:
        with open(mod.__file__, 'rt') as f:
            return f.read()
    except (OSError, TypeError):
        return ''

def _registered_networks() -> set:
    out = set()
    for name in registry.names('network'):
        target = registry.get('network', name)
        out |= {name, target if isinstance(target, str) else f'{target.__module__}.{target.__qualname__}'}
    return out

def _check_allowed(name: str, where: str) -> None:
    if not (name.startswith(SAFE_PREFIXES) or name in _registered_networks()):
        raise IOError(f'{where}: class {name!r} is not allowed (only {", ".join(p + "*" for p in SAFE_PREFIXES)} or '
                      f'classes registered as kind "network")')

def _to_json(obj: Any, where: str) -> Any:
    if isinstance(obj, dict):
        return {str(k): _to_json(v, where) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_json(v, where) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise ValueError(f'{where}: {type(obj).__name__} value {obj!r:.80} cannot be stored in .safetensors metadata')

def _from_json(obj: Any, where: str) -> Any:
    """EasyDicts for constructors; every dotted name in the arguments must be an allowed class, too."""
    if isinstance(obj, dict):
        return dnnlib.EasyDict({k: _from_json(v, where) for k, v in obj.items()})
    if isinstance(obj, list):
        return [_from_json(v, where) for v in obj]
    if isinstance(obj, str) and _DOTTED.fullmatch(obj):
        _check_allowed(obj, where)
    return obj

def save_safetensors(data: dict, path: str) -> None:
    """Write dict(G, D, G_ema[, augment_pipe, training_set_kwargs]) as a weights-only .safetensors file (atomically)."""
    import safetensors.torch
    tensors, nets = {}, {}
    for key in _SAFE_KEYS:
        net = data.get(key)
        if net is None:
            continue
        where = f'{path}: {key}'
        class_name = canonical_class_name(net)
        _check_allowed(class_name, where) # fail now, not when the file is loaded
        nets[key] = dict(class_name=class_name, init_args=_to_json(list(getattr(net, 'init_args', ())), where),
                         init_kwargs=_to_json(dict(getattr(net, 'init_kwargs', {})), where),
                         attrs=_to_json({k: getattr(net, k) for k in ('neural_rendering_resolution', 'rendering_kwargs') if hasattr(net, k)}, where))
        for name, t in net.state_dict().items():
            tensors[f'{key}.{name}'] = t.detach().cpu().contiguous().clone()  # clone: safetensors rejects shared storage
    if 'G_ema' not in nets:
        raise ValueError(f'{path}: nothing to save (no G_ema network)')
    meta = dict(format=SAFE_FORMAT, version=SAFE_VERSION, networks=nets,
                training_set_kwargs=_to_json(data.get('training_set_kwargs'), f'{path}: training_set_kwargs'))
    blob = safetensors.torch.save(tensors, metadata={'eg3d': json.dumps(meta)})
    with dnnlib.util.atomic_write(path, 'wb') as f:
        f.write(blob)

def load_network_safetensors(f) -> dict:
    """dict(G, D, G_ema, augment_pipe, training_set_kwargs) from a .safetensors file object, without unpickling."""
    import safetensors.torch
    src = getattr(f, 'name', '<stream>')
    blob = f.read()
    try:
        (n,) = struct.unpack('<Q', blob[:8])
        if not 2 <= n <= len(blob) - 8:
            raise ValueError(f'header length {n} does not fit a {len(blob)}-byte file')
        header = json.loads(blob[8:8 + n].decode('utf-8'))
        meta = json.loads(header['__metadata__']['eg3d'])
        tensors = safetensors.torch.load(blob)
    except Exception as err:  # any parse failure means the file is unusable
        raise IOError(f'{src}: not a valid .safetensors network file (truncated or corrupt?): {type(err).__name__}: {err}') from err
    if not isinstance(meta, dict) or meta.get('format') != SAFE_FORMAT or meta.get('version') != SAFE_VERSION:
        raise IOError(f'{src}: .safetensors file without {SAFE_FORMAT} v{SAFE_VERSION} metadata')
    data = dict(training_set_kwargs=meta.get('training_set_kwargs'), G=None, D=None, G_ema=None, augment_pipe=None)
    for key, spec in meta.get('networks', {}).items():
        if key not in _SAFE_KEYS:
            raise IOError(f'{src}: unexpected network {key!r}')
        where = f'{src}: {key}'
        _check_allowed(spec['class_name'], where)
        try:
            cls = dnnlib.util.get_obj_by_name(spec['class_name'])
            net = cls(*_from_json(spec.get('init_args', []), where), **_from_json(spec.get('init_kwargs', {}), where))
            state = {k[len(key) + 1:]: v for k, v in tensors.items() if k.startswith(key + '.')}
            own = net.state_dict()
            for name in [k for k in state if k not in own and '.' not in k]:  # e.g. G.dataset_label_std (added by training)
                net.register_buffer(name, state[name].clone())
            net.load_state_dict(state, strict=True)
        except IOError:
            raise
        except Exception as err:
            raise IOError(f'{where}: cannot rebuild {spec.get("class_name")}: {type(err).__name__}: {str(err)[:300]}') from err
        for k, v in spec.get('attrs', {}).items():
            setattr(net, k, v)
        data[key] = net.eval().requires_grad_(False)
    if data['G_ema'] is None:
        raise IOError(f'{src}: the file holds no G_ema network')
    return data

#----------------------------------------------------------------------------
# Safe inspection: unpickle with inert stand-ins for every global, so no code from the file ever runs.

_SAFE_BUILTINS = {('builtins', n) for n in ('dict', 'list', 'tuple', 'set', 'frozenset', 'int', 'float', 'str', 'bytes',
                                            'bytearray', 'bool', 'complex')} | {('collections', 'OrderedDict')}

class _Stub:
    """Inert stand-in for any referenced class or function: records how it was called and its state."""
    _ref = '?'
    def __init__(self, *args, **kwargs): self.args = args
    def __setstate__(self, state): self.state = state
    # Objects made by NEWOBJ skip __init__, hence setdefault.
    def __setitem__(self, key, value): self.__dict__.setdefault('entries', []).append((key, value))
    def append(self, value): self.__dict__.setdefault('entries', []).append(value)
    def extend(self, values): self.__dict__.setdefault('entries', []).extend(values)
    def __repr__(self): return f'<{self._ref}>'

class _TensorStub(_Stub):
    def __init__(self, shape, dtype='?'):
        super().__init__()
        self.shape, self.dtype = tuple(shape), dtype
    def __repr__(self): return f'<tensor {list(self.shape)}>'

class _PersistentStub(_Stub):
    def __init__(self, meta):
        super().__init__()
        self.meta = meta
        self._ref = f'persistent {meta.get("class_name")}'

class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, f):
        super().__init__(f)
        self.globals, self.persistent, self.tensors = collections.Counter(), [], []
    def find_class(self, module: str, name: str) -> Any:
        self.globals[f'{module}.{name}'] += 1
        if (module, name) in _SAFE_BUILTINS:
            return super().find_class(module, name)
        if name == '_reconstruct_persistent_obj':
            def record(meta):
                obj = _PersistentStub(meta)
                self.persistent.append(obj)
                return obj
            return record
        if name == '_load_from_bytes':
            return lambda b: _TensorStub([len(b)], 'storage-bytes')
        if name in ('_rebuild_tensor_v2', '_rebuild_tensor'):
            def rebuild(storage, offset, size, *args):
                t = _TensorStub(size)
                self.tensors.append(t)
                return t
            return rebuild
        if name in ('_rebuild_parameter', '_rebuild_parameter_with_state'):
            return lambda data, *args: data
        if name == '_rebuild_from_type_v2':
            return lambda func, new_type, args, state: func(*args)
        return type(name, (_Stub,), dict(_ref=f'{module}.{name}'))

def _describe(obj: Any) -> str:
    if isinstance(obj, _PersistentStub):
        return f'persistent {obj.meta.get("class_name")} (version {obj.meta.get("version")})'
    if isinstance(obj, dict):
        return f'dict with keys {list(obj)}'
    if isinstance(obj, _Stub):
        return repr(obj)
    return f'{type(obj).__name__}: {obj!r}'[:200]

def inspect_pickle(f) -> dict:
    """What a pickle holds, without executing any of it: top level, persistent classes, embedded sources, globals."""
    up = _SafeUnpickler(f)
    try:
        top = up.load()
    except (EOFError, pickle.UnpicklingError, ValueError, IndexError, TypeError, KeyError) as err:
        raise IOError(f'{getattr(f, "name", "<stream>")}: not a valid pickle (truncated or corrupt?): {type(err).__name__}: {err}') from err
    sources = collections.OrderedDict()
    for obj in up.persistent:
        src = obj.meta.get('module_src') or ''
        key = hashlib.sha256(src.encode()).hexdigest()[:12]
        entry = sources.setdefault(key, dict(source=src, instances=collections.Counter()))
        entry['instances'][obj.meta.get('class_name')] += 1
    top_items = top.items() if isinstance(top, dict) else enumerate(top) if isinstance(top, (list, tuple)) else [('<root>', top)]
    return dict(top={str(k): _describe(v) for k, v in top_items}, sources=sources, globals=dict(up.globals),
                num_tensors=len(up.tensors), num_elements=int(sum(np.prod(t.shape) for t in up.tensors)))

#----------------------------------------------------------------------------
