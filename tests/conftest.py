"""Shared pytest configuration: markers and the GPU skip."""

from __future__ import annotations

import pytest
import torch

# The suite's models are tiny: one thread is faster than two (no scheduling overhead), and the
# 2-process gloo tests then get a core each.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
