"""Test configuration: make the repository root importable when pytest is run from elsewhere."""

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


import pytest

@pytest.fixture(autouse=True)
def _fresh_process_state():
    """Each test sees process-global state as a fresh process does: in-process training runs (presets, CLIs under
    CliRunner) otherwise leave `training_stats.init_multiprocessing` locked and glibc's heap tuned for the next test."""
    yield
    from torch_utils import training_stats
    from torch_utils.ops import host_malloc
    training_stats.reset(process=True)
    if host_malloc.active:
        host_malloc.tune(False) # in-process training switches the heap setting process-wide
