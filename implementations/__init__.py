"""FixMatch implementations behind one interface (see interface.py)."""

from __future__ import annotations

import importlib

from implementations.interface import Implementation

# name -> "module:class"; imported only when asked for, so one implementation's
# dependencies never load into another's process.
IMPLEMENTATIONS = {
    "own": "implementations.own.trainer:OwnFixMatch",
    "torchssl": "implementations.torchssl.adapter:TorchSSLFixMatch",
}


def load_implementation(name: str) -> Implementation:
    module_name, class_name = IMPLEMENTATIONS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)()
