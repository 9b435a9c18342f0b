"""Pickling of classes together with the source code of their module (NVlabs persistence format, version 6).

A class decorated with @persistent_class pickles as a call to `_reconstruct_persistent_obj(meta)`, where meta
holds the full source text of the defining module, the class name and the instance state. Loading re-executes
that source in a fresh module, so a pickle keeps working after the code base changes or moves. The layout is
byte-compatible with the pickles written by StyleGAN2-ADA, StyleGAN3 and EG3D.
"""

import copy
import inspect
import io
import pickle
import sys
import types
import uuid
from typing import Any, Callable, Type

import dnnlib

#----------------------------------------------------------------------------

_version = 6                # Internal version number; pickles carry it in meta['version'].
_decorators = set()         # {decorator_class, ...}
_import_hooks = []          # [hook_function, ...]
_module_to_src_dict = dict()# {module: src, ...}
_src_to_module_dict = dict()# {src: module, ...}

#----------------------------------------------------------------------------

def persistent_class(orig_class: Type) -> Type:
    """Class decorator: instances remember their constructor arguments and pickle together with their source.

    Returns a subclass of `orig_class` (named like it) whose instances
    * keep deep copies of the constructor arguments in `init_args` / `init_kwargs`,
    * are checked for pickleability at construction time (fail early, not when saving a snapshot),
    * pickle (and deepcopy) through `_reconstruct_persistent_obj` with the module source embedded.
    Everything the class needs must be defined or imported at the top level of its module, because the
    whole module source is re-executed on load.
    """
    assert isinstance(orig_class, type), 'persistent_class() must decorate a class'
    if is_persistent(orig_class):
        return orig_class

    assert orig_class.__module__ in sys.modules, f'module {orig_class.__module__!r} is not imported'
    orig_module = sys.modules[orig_class.__module__]
    orig_module_src = _module_to_src(orig_module)

    class Decorator(orig_class):
        _orig_module_src = orig_module_src
        _orig_class_name = orig_class.__name__

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._init_args = copy.deepcopy(args)
            self._init_kwargs = copy.deepcopy(kwargs)
            # The class must be reachable by name at module level, or loading would not find it.
            assert orig_class.__name__ in orig_module.__dict__, \
                f'{orig_class.__name__} must be defined at the top level of its module'
            _check_pickleable(self.__reduce__())

        @property
        def init_args(self) -> tuple:
            return copy.deepcopy(self._init_args)

        @property
        def init_kwargs(self) -> dnnlib.EasyDict:
            return dnnlib.EasyDict(copy.deepcopy(self._init_kwargs))

        def __reduce__(self):
            fields = list(super().__reduce__())
            fields += [None] * max(3 - len(fields), 0)
            if fields[0] is not _reconstruct_persistent_obj:
                meta = dict(type='class', version=_version, module_src=self._orig_module_src,
                            class_name=self._orig_class_name, state=fields[2])
                fields[0] = _reconstruct_persistent_obj # reconstruct func
                fields[1] = (meta,)                     # reconstruct args
                fields[2] = None                        # state dict (now inside meta)
            return tuple(fields)

    Decorator.__name__ = orig_class.__name__
    _decorators.add(Decorator)
    return Decorator

#----------------------------------------------------------------------------

def is_persistent(obj: Any) -> bool:
    """Is the given object (a class or an instance) persistent, i.e. created by @persistent_class?"""
    try:
        if obj in _decorators:
            return True
    except TypeError: # unhashable instance
        pass
    return type(obj) in _decorators # pylint: disable=unidiomatic-typecheck

#----------------------------------------------------------------------------

def import_hook(hook: Callable[[dnnlib.EasyDict], dnnlib.EasyDict]) -> Callable:
    """Register `hook(meta) -> meta`, called for every persistent object being unpickled before its source runs.

    meta is an EasyDict with fields type, version, module_src, class_name, state (also an EasyDict).
    A hook typically patches `meta.module_src` of old pickles by string replacement and must return meta.
    """
    assert callable(hook)
    _import_hooks.append(hook)
    return hook

#----------------------------------------------------------------------------

def _reconstruct_persistent_obj(meta: dict) -> Any:
    """Hook called by pickle (and deepcopy) to rebuild a persistent object from its meta dict."""
    meta = dnnlib.EasyDict(meta)
    meta.state = dnnlib.EasyDict(meta.state if meta.state is not None else {})
    for hook in _import_hooks:
        meta = hook(meta)
        assert meta is not None, 'persistence import hooks must return the (possibly modified) meta'

    assert meta.version == _version, f'unsupported persistence version {meta.version} (expected {_version})'
    module = _src_to_module(meta.module_src)

    assert meta.type == 'class', f'unsupported persistent object type {meta.type!r}'
    if meta.class_name not in module.__dict__:
        raise AttributeError(f'pickled source does not define class {meta.class_name!r}')
    orig_class = module.__dict__[meta.class_name]
    decorator_class = persistent_class(orig_class)
    obj = decorator_class.__new__(decorator_class) # no __init__: the state is restored below

    setstate = getattr(obj, '__setstate__', None)
    if callable(setstate):
        setstate(meta.state) # nn.Module.__setstate__ also adds hook attributes newer torch versions expect
    else:
        obj.__dict__.update(meta.state)
    return obj

#----------------------------------------------------------------------------

def _module_to_src(module: types.ModuleType) -> str:
    """Source code of the given module (cached; also registers the reverse mapping)."""
    src = _module_to_src_dict.get(module, None)
    if src is None:
        src = inspect.getsource(module)
        _module_to_src_dict[module] = src
        _src_to_module_dict[src] = module
    return src

def _src_to_module(src: str) -> types.ModuleType:
    """Module for the given source code: a cached one with identical source, else a freshly exec'd one."""
    module = _src_to_module_dict.get(src, None)
    if module is None:
        module_name = '_imported_module_' + uuid.uuid4().hex
        module = types.ModuleType(module_name)
        # Register before exec: the @persistent_class decorators that run during exec look up the module
        # source in the cache (inspect.getsource cannot work for a module without a file).
        sys.modules[module_name] = module
        _module_to_src_dict[module] = src
        _src_to_module_dict[src] = module
        try:
            exec(src, module.__dict__) # pylint: disable=exec-used
        except BaseException as err:
            # Forget the half-initialised module so that a retry (e.g. after installing a dependency) works.
            del sys.modules[module_name]
            del _module_to_src_dict[module]
            del _src_to_module_dict[src]
            first_line = src.strip().splitlines()[0][:100] if src.strip() else ''
            if hasattr(err, 'add_note'):
                err.add_note(f'(while executing the module source embedded in a pickle, starting with: {first_line!r})')
            raise
    return module

#----------------------------------------------------------------------------

def _check_pickleable(obj: Any) -> None:
    """Raise if `obj` cannot be pickled; cheap for tensors, arrays and nested persistent objects."""
    def recurse(obj):
        if isinstance(obj, (list, tuple, set)):
            return [recurse(x) for x in obj]
        if isinstance(obj, dict):
            return [[recurse(x), recurse(y)] for x, y in obj.items()]
        if isinstance(obj, (str, int, float, bool, bytes, bytearray)):
            return None # Python primitive types are pickleable.
        if f'{type(obj).__module__}.{type(obj).__name__}' in ['numpy.ndarray', 'torch.Tensor', 'torch.nn.parameter.Parameter']:
            return None # NumPy arrays and PyTorch tensors are pickleable.
        if is_persistent(obj):
            return None # Persistent objects are pickleable, by virtue of the constructor check.
        return obj
    with io.BytesIO() as f:
        pickle.dump(recurse(obj), f)

#----------------------------------------------------------------------------
