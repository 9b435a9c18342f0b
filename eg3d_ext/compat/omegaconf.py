"""Minimal stand-in for omegaconf (used only when omegaconf is not installed) so 3DGP pickles load.

3DGP networks store their `cfg` (a child DictConfig of the whole experiment config); omegaconf 2.0 pickles it as
`DictConfig` / `ListConfig` / `AnyNode` objects with `ContainerMetadata` / `Metadata` (eg3d-compatibility.md a.7).
These classes accept that state and give read access (attributes, items, `${a.b}` interpolations resolved from the
root); `to_easydict()` converts a config to plain EasyDicts/lists, which is what the loader keeps.
"""

import re
from typing import Any

from dnnlib.util import EasyDict

_INTERP = re.compile(r'\$\{([A-Za-z0-9_.\-]+)\}') # ${a.b.c}; resolver calls like ${fn:x} stay strings

#----------------------------------------------------------------------------

class _State:
    """Restores whatever attribute dict pickle hands over (state or (state, slotstate))."""
    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:
            state = dict(state[0] or {}, **(state[1] or {}))
        self.__dict__.update(state or {})

class Metadata(_State):
    pass

class ContainerMetadata(Metadata):
    pass

class Node(_State):
    pass

class ValueNode(Node):
    def _value(self) -> Any:
        return self.__dict__.get('_val', None)

class AnyNode(ValueNode):
    pass

class StringNode(ValueNode):
    pass

class IntegerNode(ValueNode):
    pass

class FloatNode(ValueNode):
    pass

class BooleanNode(ValueNode):
    pass

class EnumNode(ValueNode):
    pass

#----------------------------------------------------------------------------

class Container(Node):
    def _root(self) -> 'Container':
        node = self
        while isinstance(node.__dict__.get('_parent', None), Container):
            node = node.__dict__['_parent']
        return node

    def _select(self, path: str) -> Any:
        node: Any = self._root()
        for part in path.split('.'):
            node = node[int(part)] if isinstance(node, ListConfig) else node[part]
        return node

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, ValueNode):
            value = value._value()
        if isinstance(value, str):
            m = _INTERP.fullmatch(value)
            if m:
                return self._select(m.group(1))
            return _INTERP.sub(lambda m: str(self._select(m.group(1))), value)
        return value

    def _get_content(self) -> Any:
        return self.__dict__.get('_content', None)

    def to_easydict(self) -> Any:
        """Plain EasyDict (DictConfig) or list (ListConfig), interpolations resolved."""
        conv = lambda v: v.to_easydict() if isinstance(v, Container) else v
        if isinstance(self, ListConfig):
            return [conv(v) for v in self]
        return EasyDict({k: conv(self[k]) for k in self.keys()})

class DictConfig(Container):
    def keys(self):
        content = self._get_content()
        return list(content.keys()) if isinstance(content, dict) else []

    def __getitem__(self, key: Any) -> Any:
        content = self._get_content()
        if not isinstance(content, dict) or key not in content:
            raise KeyError(key)
        return self._resolve(content[key])

    def __getattr__(self, name: str) -> Any:
        if name.startswith('__') or name in ('_content', '_parent', '_metadata'):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: Any) -> bool:
        return key in self.keys()

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def items(self):
        return [(k, self[k]) for k in self.keys()]

    def values(self):
        return [self[k] for k in self.keys()]

    def __repr__(self) -> str:
        return f'DictConfig(stand-in, keys={self.keys()})'

class ListConfig(Container):
    def _list(self) -> list:
        content = self._get_content()
        return content if isinstance(content, list) else []

    def __getitem__(self, idx: Any) -> Any:
        if isinstance(idx, slice):
            return [self._resolve(v) for v in self._list()[idx]]
        return self._resolve(self._list()[idx])

    def __len__(self) -> int:
        return len(self._list())

    def __iter__(self):
        return (self._resolve(v) for v in self._list())

class OmegaConf:
    """The few static helpers 3DGP code calls."""
    @staticmethod
    def to_container(cfg: Any, resolve: bool = True) -> Any:
        return cfg.to_easydict() if isinstance(cfg, Container) else cfg

    @staticmethod
    def create(obj: Any = None) -> Any:
        return EasyDict(obj or {})

#----------------------------------------------------------------------------
