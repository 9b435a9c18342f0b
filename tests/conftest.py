"""Test configuration: make the repository root importable when pytest is run from elsewhere."""

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


import pytest

@pytest.fixture(autouse=True)
def _fresh_training_stats():
    """Each test sees training_stats as a fresh process does: in-process training runs (presets, CLIs under
    CliRunner) otherwise leave `init_multiprocessing` locked for the next test."""
    yield
    from torch_utils import training_stats
    training_stats.reset(process=True)
