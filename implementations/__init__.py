"""The implementations behind one interface (interface.Implementation), by name:

- `own`: the methods written from their papers (implementations/own), with the paper's choices;
- `own-as-torchssl`: the same code with every switch of the difference ledger (ledger.py) at TorchSSL's
  choice, so that own and TorchSSL can be told apart from the choices they make;
- `torchssl`: TorchSSL's own algorithms at the pinned commit, unmodified (implementations/torchssl).

Each name maps to "module:factory", imported only when asked for, so that one implementation's dependencies
never load into another's process. Another implementation joins by name without touching the harness: in
`SSL_BENCH_IMPLEMENTATIONS` ("name=module:factory", comma-separated), which every process of a grid inherits.
"""

from __future__ import annotations

import functools
import importlib
import os

from implementations.interface import Implementation

BUILT_IN = {
    "own": "implementations.own.implementation:Own",
    "own-as-torchssl": "implementations.own.implementation:OwnAsTorchSSL",
    "torchssl": "implementations.torchssl.adapter:TorchSSLImplementation",
}
PLUGINS_VARIABLE = "SSL_BENCH_IMPLEMENTATIONS"


def registry() -> dict[str, str]:
    """Every implementation's name and factory: the built-in ones, then those of SSL_BENCH_IMPLEMENTATIONS."""
    plugins = dict(entry.strip().split("=", 1) for entry in os.environ.get(PLUGINS_VARIABLE, "").split(",")
                   if "=" in entry)
    return {**BUILT_IN, **plugins}


def implementation_names() -> tuple[str, ...]:
    return tuple(registry())


@functools.cache
def _made(name: str, factory: str) -> Implementation:
    module_name, _, attribute = factory.partition(":")
    return getattr(importlib.import_module(module_name), attribute)()


def implementation(name: str) -> Implementation:
    """The implementation registered as `name` (KeyError when none is)."""
    return _made(name, registry()[name])


def comparisons() -> tuple[tuple[str, str], ...]:
    """(implementation, one it is compared with) for every registered implementation and each it names."""
    return tuple((name, other) for name in implementation_names() for other in implementation(name).compared_with)
