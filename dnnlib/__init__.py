"""Small utility library shared by all code (EasyDict, caching, name resolution, plugin registry)."""

from .util import EasyDict, make_cache_dir_path  # noqa: F401
