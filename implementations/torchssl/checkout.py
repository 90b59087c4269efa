"""The pinned TorchSSL checkout: read the pin, fetch it, and check that what is there is the pin, unmodified.

The pin (vendor/torchssl.toml) names TorchSSL's upstream URL and one commit. `sync_checkout` clones
that URL, or any local clone or mirror passed as `source`, into `checkout_dir()` (vendor/TorchSSL, or
the folder in the environment variable SSL_BENCH_TORCHSSL_DIR), checks the commit out detached and
verifies it. `verify_checkout` is what every torchssl run calls first: the reference runs only at the
pinned commit and only unmodified ("clean": no changed or untracked file; TorchSSL's .gitignore
applies). Every problem raises `VendorError` whose message is one sentence saying what to do.

A leaf module (gitpython and the standard library only): the TorchSSL adapter uses it, and so does the harness
(`bench vendor`, the runner's check before a grid starts), which may import implementations but not the reverse.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import git

REPO_ROOT = Path(__file__).resolve().parents[2]
PIN_FILE = REPO_ROOT / "vendor" / "torchssl.toml"
DEFAULT_CHECKOUT = REPO_ROOT / "vendor" / "TorchSSL"
CHECKOUT_ENV = "SSL_BENCH_TORCHSSL_DIR"
SYNC_COMMAND = "bench vendor sync"
# git must fail rather than wait for a password on an unreachable or private URL.
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}


class VendorError(RuntimeError):
    """The pin cannot be read, or the TorchSSL checkout is missing, at another commit, or modified."""


@dataclass(frozen=True)
class Pin:
    url: str
    commit: str  # 40 hex digits


@dataclass(frozen=True)
class VendorInfo:
    """What is in the checkout folder."""

    path: Path
    commit: str
    clean: bool
    changes: tuple[str, ...] = ()  # `git status --porcelain` lines, when not clean


def read_pin(pin_file: Path | str = PIN_FILE) -> Pin:
    pin_file = Path(pin_file)
    try:
        document = tomllib.loads(pin_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VendorError(f"the TorchSSL pin file {pin_file} is missing.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise VendorError(f"the TorchSSL pin file {pin_file} is not valid TOML ({error}).") from None
    section = document.get("torchssl")
    if not isinstance(section, dict) or not isinstance(section.get("url"), str) \
            or not isinstance(section.get("commit"), str):
        raise VendorError(f"the TorchSSL pin file {pin_file} needs a [torchssl] table with `url` and `commit` strings.")
    commit = section["commit"].strip().lower()
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise VendorError(f"the TorchSSL pin file {pin_file} gives commit {section['commit']!r}, "
                          f"which is not a full 40-digit hexadecimal SHA.")
    return Pin(url=section["url"].strip(), commit=commit)


def checkout_dir() -> Path:
    """Where the TorchSSL checkout lives: $SSL_BENCH_TORCHSSL_DIR, else vendor/TorchSSL."""
    configured = os.environ.get(CHECKOUT_ENV)
    return Path(configured).expanduser().resolve() if configured else DEFAULT_CHECKOUT


def inspect_checkout(directory: Path | str | None = None) -> VendorInfo:
    """The commit and cleanliness of the checkout, without judging them."""
    directory = Path(directory) if directory is not None else checkout_dir()
    repo = _open_checkout(directory)
    try:
        commit = repo.head.commit.hexsha
    except ValueError:  # a repository without any commit checked out
        raise VendorError(f"{directory} is a git repository with no commit checked out; "
                          f"delete it and run `{SYNC_COMMAND}`.") from None
    changes = tuple(_status_lines(repo))
    return VendorInfo(path=directory, commit=commit, clean=not changes, changes=changes)


def verify_checkout(directory: Path | str | None = None, pin: Pin | None = None) -> VendorInfo:
    """The checkout if it is the pinned commit and unmodified; VendorError otherwise."""
    pin = pin or read_pin()
    info = inspect_checkout(directory)
    problem = checkout_problem(info, pin)
    if problem:
        raise VendorError(problem)
    return info


def checkout_problem(info: VendorInfo, pin: Pin) -> str | None:
    """One sentence saying why this checkout may not run, or None when it is the pin, unmodified."""
    if info.commit != pin.commit:
        return (f"the TorchSSL checkout at {info.path} is at commit {info.commit[:12]}, not the pinned "
                f"{pin.commit[:12]}; run `{SYNC_COMMAND}` to check out the pin.")
    if not info.clean:
        return _dirty_sentence(info)
    return None


def sync_checkout(source: str | None = None, directory: Path | str | None = None,
                  pin: Pin | None = None) -> VendorInfo:
    """Fetch the pinned commit from `source` (default: the pin's URL) into the checkout folder, check
    it out detached, and verify it. An existing checkout is fetched into, never overwritten when it
    holds local changes; a new one is cloned next to its final place and moved there only when complete."""
    pin = pin or read_pin()
    directory = Path(directory) if directory is not None else checkout_dir()
    source = _resolve_source(source or pin.url)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        repo = _open_checkout(directory)
        info = inspect_checkout(directory)
        if not info.clean:
            raise VendorError(_dirty_sentence(info, while_syncing=True))
        if not _has_commit(repo, pin.commit):
            with repo.git.custom_environment(**_GIT_ENV):
                _git(lambda: repo.git.fetch(source, "+refs/heads/*:refs/remotes/origin/*", "--tags"), source)
            if not _has_commit(repo, pin.commit):
                raise VendorError(f"{source} does not contain the pinned TorchSSL commit {pin.commit[:12]}.")
        if info.commit != pin.commit:
            repo.git.checkout("--detach", "--quiet", pin.commit)
    else:
        _clone(source, directory, pin)
    return verify_checkout(directory, pin)


def _clone(source: str, directory: Path, pin: Pin) -> None:
    import git

    directory.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{directory.name}.partial-", dir=directory.parent))
    try:
        repo = _git(lambda: git.Repo.clone_from(source, partial, no_checkout=True, env=_GIT_ENV), source)
        if not _has_commit(repo, pin.commit):
            raise VendorError(f"{source} does not contain the pinned TorchSSL commit {pin.commit[:12]}.")
        repo.git.checkout("--detach", "--quiet", pin.commit)
        repo.close()
        if directory.exists():  # an empty folder left in its place
            directory.rmdir()
        partial.rename(directory)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)


def _open_checkout(directory: Path) -> git.Repo:
    import git  # here, not at the top: the GPU check imports this module where gitpython is not installed

    if not directory.exists():
        raise VendorError(f"the TorchSSL checkout {directory} does not exist; `{SYNC_COMMAND}` fetches it.")
    try:
        repo = git.Repo(directory)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise VendorError(f"{directory} is not a git checkout of TorchSSL; delete it and run `{SYNC_COMMAND}`, "
                          f"or point {CHECKOUT_ENV} at a checkout.") from None
    if Path(repo.working_tree_dir or "").resolve() != directory.resolve():
        # A folder inside some other repository (e.g. an empty vendor/TorchSSL in ours) is not a checkout.
        raise VendorError(f"{directory} is not a git checkout of TorchSSL; delete it and run `{SYNC_COMMAND}`, "
                          f"or point {CHECKOUT_ENV} at a checkout.")
    return repo


def _status_lines(repo: git.Repo) -> list[str]:
    output = repo.git.status("--porcelain", "--untracked-files=all")
    return [line for line in output.splitlines() if line.strip()]


def _dirty_sentence(info: VendorInfo, while_syncing: bool = False) -> str:
    shown = ", ".join(line.strip() for line in info.changes[:3])
    more = f" and {len(info.changes) - 3} more" if len(info.changes) > 3 else ""
    action = "sync does not overwrite them" if while_syncing else "TorchSSL must run unmodified"
    return (f"the TorchSSL checkout at {info.path} has local changes ({shown}{more}) and {action}; "
            f"undo them with `git -C {info.path} checkout -- . && git -C {info.path} clean -fd`, "
            f"or delete the folder and run `{SYNC_COMMAND}`.")


def _has_commit(repo: git.Repo, commit: str) -> bool:
    import git

    try:
        repo.git.cat_file("-e", f"{commit}^{{commit}}")
    except git.GitCommandError:
        return False
    return True


def _resolve_source(source: str) -> str:
    """A local path becomes absolute (git needs no URL for it); anything else is passed to git as is."""
    candidate = Path(source).expanduser()
    if candidate.exists():
        return str(candidate.resolve())
    if source.startswith(("/", ".", "~")) or (os.sep in source and "://" not in source and "@" not in source):
        raise VendorError(f"the source {source} does not exist; pass a git URL or the path of a TorchSSL clone or mirror.")
    return source


def _git(action, source: str):
    import git

    try:
        return action()
    except git.GitCommandError as error:
        lines = [line.strip().removeprefix("stderr:").strip(" '") for line in str(error.stderr or "").splitlines()]
        messages = [line for line in lines if line.startswith(("fatal:", "error:"))] or [line for line in lines if line]
        reason = messages[-1].removeprefix("fatal:").removeprefix("error:").strip() if messages else f"git exit code {error.status}"
        offline_hint = "" if Path(source).exists() or source.startswith("file://") else (
            f" Without a network, `{SYNC_COMMAND} --source <a TorchSSL bundle or local clone>` fetches it from a file.")
        raise VendorError(f"could not fetch TorchSSL from {source} ({reason}).{offline_hint}") from None
