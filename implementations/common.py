"""Small helpers that every implementation and the harness share (the harness may import implementations; an
implementation never imports the harness)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Mapping


PROJECT_ROOT = Path(__file__).resolve().parents[1]


def with_project_on_path(environment: Mapping[str, str]) -> dict[str, str]:
    """The project's root first on PYTHONPATH, so that a child process (`python -m harness.worker`, the TorchSSL
    child) imports this checkout, installed or not."""
    paths = [str(PROJECT_ROOT), *[path for path in environment.get("PYTHONPATH", "").split(os.pathsep) if path]]
    return {**environment, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


def sentence(error: BaseException) -> str:
    """An error's message as a sentence for the user: its first letter upper-case (its type's name when empty)."""
    text = str(error).strip()
    return text[0].upper() + text[1:] if text else type(error).__name__


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an error's message (its type's name when it has none), for a one-sentence report."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:limit]


def all_finite(tensors) -> bool:
    """Whether every value of the tensors is finite, with one host synchronisation whatever their number (their
    largest magnitudes in one foreach call; NaN and inf propagate). Imports torch only when called."""
    import torch

    return bool(torch.isfinite(torch.stack(torch._foreach_norm(list(tensors), ord=float("inf")))).all())


def write_atomically(path: Path | str, write: Callable[[IO[bytes]], object]) -> None:
    """`write(file)` into a temporary file beside `path`, synced, then renamed over `path`: a reader (or a kill, or a
    crash of the machine) never sees half a file, and the previous one stays until the new one is whole."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path | str, text: str) -> None:
    write_atomically(path, lambda file: file.write(text.encode("utf-8")))
