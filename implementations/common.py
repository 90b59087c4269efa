"""Small helpers that every implementation and the harness share (the harness may import implementations; an
implementation never imports the harness)."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator, Mapping


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


class DiskFullError(OSError):
    """A write found no space left on the disk holding `filename`."""

    def __init__(self, filename: Path | str):
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))


SQLITE_FULL = "database or disk is full"  # SQLite's words for a write that found no space
_DISK_FULL_TEXTS = (SQLITE_FULL, os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))


def error_chain(error: BaseException | None) -> Iterator[BaseException]:
    """The error, then what caused it, then what caused that, ..."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def is_disk_full(error: BaseException | None) -> bool:
    """Whether a full disk (or quota) is behind the error, anywhere in its chain: an OSError, SQLite's own
    words, or a library's error that quotes them."""
    return any((isinstance(link, OSError) and link.errno in (errno.ENOSPC, errno.EDQUOT))
               or any(text in str(link) for text in _DISK_FULL_TEXTS) for link in error_chain(error))


def full_disk_file(error: BaseException | None) -> str | None:
    """The file a full-disk error names, if any error in its chain names one."""
    return next((str(link.filename) for link in error_chain(error) if isinstance(link, OSError) and link.filename),
                None)


NEARLY_FULL_BYTES = 1 << 20  # a write that fails with less free than this failed for want of space


def write_atomically(path: Path | str, write: Callable[[IO[bytes]], object]) -> None:
    """`write(file)` into a temporary file beside `path`, synced, then renamed over `path`: a reader (or a kill, or a
    crash of the machine) never sees half a file, and the previous one stays until the new one is whole. A write
    that fails on a full disk raises DiskFullError (torch.save, for one, reports it as a RuntimeError)."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except Exception as error:
        full = is_disk_full(error) or shutil.disk_usage(path.parent).free < NEARLY_FULL_BYTES
        Path(temporary).unlink(missing_ok=True)
        if full and not isinstance(error, DiskFullError):
            raise DiskFullError(path) from error
        raise
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path | str, text: str) -> None:
    write_atomically(path, lambda file: file.write(text.encode("utf-8")))
