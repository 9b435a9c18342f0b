"""Torch-free name registry for presets, networks, losses, datasets, metrics, ... extended by plugins."""

import importlib
import importlib.metadata
from typing import Any, Callable, Dict, Iterable, List, Union

KINDS = ('preset', 'network', 'loss', 'dataset', 'metric', 'depth_estimator', 'train_option')
ENTRY_POINT_GROUP = 'eg3d.plugins'

_registry: Dict[str, Dict[str, Any]] = {kind: {} for kind in KINDS}
_entry_points_loaded = False
_loaded_modules: set = set()

#----------------------------------------------------------------------------

def _check_kind(kind: str) -> Dict[str, Any]:
    if kind not in _registry:
        raise ValueError(f'Unknown registry kind {kind!r}; valid kinds: {", ".join(KINDS)}')
    return _registry[kind]

def register(kind: str, name: str, target: Union[str, Callable, Any, None] = None) -> Any:
    """Register `target` (a dotted name string such as 'training.loss.StyleGAN2Loss', or any object)
    under (kind, name). Without `target`, returns a decorator that registers the decorated object.

    Re-registering the same name with the same target (or a re-imported definition of it) is allowed;
    a different target is an error, so that two plugins cannot silently shadow each other.
    """
    table = _check_kind(kind)
    if not isinstance(name, str) or not name:
        raise ValueError(f'register(): name must be a non-empty string, got {name!r}')

    def do_register(obj: Any) -> Any:
        if obj is None:
            raise ValueError(f'register({kind!r}, {name!r}): target must not be None')
        old = table.get(name)
        # Same module.qualname = the same definition imported again (e.g. a reloaded plugin module).
        if old is not None and old is not obj and old != obj and _describe(old) != _describe(obj):
            raise ValueError(f'{kind} {name!r} is already registered as {_describe(old)}; '
                             f'refusing to replace it with {_describe(obj)}')
        table[name] = obj
        return obj

    if target is None:
        return do_register
    return do_register(target)

def unregister(kind: str, name: str) -> None:
    """Remove a registration (mainly for tests)."""
    _check_kind(kind).pop(name, None)

def get(kind: str, name: str) -> Any:
    """Return the registered target: a dotted name string or the registered object."""
    table = _check_kind(kind)
    if name not in table:
        valid = ', '.join(sorted(table)) or '(none registered; did you call registry.load_plugins()?)'
        raise KeyError(f'Unknown {kind} {name!r}; valid names: {valid}')
    return table[name]

def resolve(kind: str, name: str) -> Any:
    """Like get(), but dotted-name targets are imported and the object is returned."""
    target = get(kind, name)
    if isinstance(target, str):
        from . import util # local import: util pulls in numpy, the registry itself stays dependency-free
        return util.get_obj_by_name(target)
    return target

def names(kind: str) -> List[str]:
    """Sorted list of names registered under `kind`."""
    return sorted(_check_kind(kind))

def items(kind: str) -> List[tuple]:
    """Sorted (name, target) pairs registered under `kind`."""
    table = _check_kind(kind)
    return [(name, table[name]) for name in sorted(table)]

def _describe(obj: Any) -> str:
    if isinstance(obj, str):
        return repr(obj)
    return f'{getattr(obj, "__module__", "?")}.{getattr(obj, "__qualname__", type(obj).__name__)}'

#----------------------------------------------------------------------------

def _entry_points() -> Iterable[Any]:
    eps = importlib.metadata.entry_points()
    if hasattr(eps, 'select'): # Python >= 3.10
        return eps.select(group=ENTRY_POINT_GROUP)
    return eps.get(ENTRY_POINT_GROUP, []) # pragma: no cover (Python 3.8/3.9)

def load_plugins(modules: Iterable[str] = ()) -> List[str]:
    """Import every entry point of the group 'eg3d.plugins' (only the first time) plus the given module names.

    Importing a plugin module is expected to call register(). An entry point whose value is a callable
    (e.g. 'pkg.plugin:setup') is called without arguments after loading. Returns the names loaded now.
    """
    global _entry_points_loaded
    loaded = []
    if not _entry_points_loaded:
        _entry_points_loaded = True
        for ep in _entry_points():
            try:
                obj = ep.load()
            except Exception as err:
                raise ImportError(f'Failed to load plugin entry point {ep.name!r} ({ep.value}) of group '
                                  f'{ENTRY_POINT_GROUP!r}: {type(err).__name__}: {err}') from err
            if callable(obj) and not isinstance(obj, type):
                obj()
            loaded.append(ep.value)
    if isinstance(modules, str):
        modules = [modules]
    for module_name in modules:
        if module_name in _loaded_modules:
            continue
        try:
            importlib.import_module(module_name)
        except ImportError as err:
            raise ImportError(f'Cannot import plugin module {module_name!r}: {err}') from err
        _loaded_modules.add(module_name)
        loaded.append(module_name)
    return loaded

#----------------------------------------------------------------------------
