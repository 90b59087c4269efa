"""The TorchSSL pin: reading it, fetching it, and refusing anything but the pinned commit, unmodified.

Most tests use a tiny git repository made here as the "upstream", so they run everywhere; the real
TorchSSL is synced from the git bundle beside the project (../shared/mirrors/TorchSSL.bundle, as in CI),
or from a checkout when there is no bundle, and skipped with the reason only when there is neither.
"""

from __future__ import annotations

from pathlib import Path

import git
import pytest
from click.testing import CliRunner

from implementations.torchssl import checkout as vendor
from harness.cli import main
from tests.fixtures_data import TORCHSSL_BUNDLE, torchssl_checkout

ACTOR = git.Actor("ssl-bench tests", "tests@ssl-bench.invalid")


def _commit(repo: git.Repo, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        path = Path(repo.working_tree_dir) / name
        path.write_text(text)
        repo.index.add([name])
    return repo.index.commit(message, author=ACTOR, committer=ACTOR).hexsha


@pytest.fixture
def upstream(tmp_path) -> tuple[git.Repo, vendor.Pin]:
    """A small repository with two commits; the pin names the first."""
    repo = git.Repo.init(tmp_path / "upstream")
    pinned = _commit(repo, {"fixmatch.py": "print('v1')\n", ".gitignore": "saved_models/\n"}, "first")
    _commit(repo, {"fixmatch.py": "print('v2')\n"}, "second")
    return repo, vendor.Pin(url=str(tmp_path / "upstream"), commit=pinned)


def _real_torchssl_source() -> Path:
    if TORCHSSL_BUNDLE.exists():
        return TORCHSSL_BUNDLE
    return torchssl_checkout()


def test_the_pin_file_names_the_upstream_url_and_a_full_commit():
    pin = vendor.read_pin()
    assert pin.url == "https://github.com/TorchSSL/TorchSSL"
    assert pin.commit == "f26e1d42967cec7f7c8a00c2e7ff9219d8ab7c92"


@pytest.mark.parametrize("text, complaint", [
    ("[torchssl]\nurl = 'https://example.org/x'\n", r"needs a \[torchssl\] table"),
    ("[torchssl]\nurl = 'https://example.org/x'\ncommit = 'f26e1d4'\n", "not a full 40-digit"),
    ("[torchssl\n", "not valid TOML"),
])
def test_a_malformed_pin_file_is_one_sentence(tmp_path, text, complaint):
    pin_file = tmp_path / "torchssl.toml"
    pin_file.write_text(text)
    with pytest.raises(vendor.VendorError, match=complaint):
        vendor.read_pin(pin_file)


def test_the_checkout_folder_follows_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(vendor.CHECKOUT_ENV, str(tmp_path / "elsewhere"))
    assert vendor.checkout_dir() == (tmp_path / "elsewhere").resolve()
    monkeypatch.delenv(vendor.CHECKOUT_ENV)
    assert vendor.checkout_dir() == vendor.REPO_ROOT / "vendor" / "TorchSSL"


def test_sync_clones_the_pinned_commit_detached_and_clean(tmp_path, upstream):
    _, pin = upstream
    info = vendor.sync_checkout(directory=tmp_path / "TorchSSL", pin=pin)
    assert (info.commit, info.clean) == (pin.commit, True)
    clone = git.Repo(tmp_path / "TorchSSL")
    assert clone.head.is_detached
    assert (tmp_path / "TorchSSL" / "fixmatch.py").read_text() == "print('v1')\n"


def test_sync_moves_an_existing_checkout_back_to_the_pin(tmp_path, upstream):
    _, pin = upstream
    vendor.sync_checkout(directory=tmp_path / "TorchSSL", pin=pin)
    git.Repo(tmp_path / "TorchSSL").git.checkout("--detach", "--quiet", "origin/HEAD")
    assert vendor.inspect_checkout(tmp_path / "TorchSSL").commit != pin.commit
    assert vendor.sync_checkout(directory=tmp_path / "TorchSSL", pin=pin).commit == pin.commit


def test_sync_fetches_a_newly_pinned_commit_into_an_existing_checkout(tmp_path, upstream):
    repo, pin = upstream
    vendor.sync_checkout(directory=tmp_path / "TorchSSL", pin=pin)
    newer = _commit(repo, {"fixmatch.py": "print('v3')\n"}, "third")
    info = vendor.sync_checkout(directory=tmp_path / "TorchSSL", pin=vendor.Pin(url=pin.url, commit=newer))
    assert info.commit == newer


def test_verify_rejects_a_checkout_at_another_commit(tmp_path, upstream):
    _, pin = upstream
    vendor.sync_checkout(directory=tmp_path / "TorchSSL", pin=pin)
    git.Repo(tmp_path / "TorchSSL").git.checkout("--detach", "--quiet", "origin/HEAD")
    with pytest.raises(vendor.VendorError, match=r"not the pinned .*run `bench vendor sync`"):
        vendor.verify_checkout(tmp_path / "TorchSSL", pin)


@pytest.mark.parametrize("change", ["modified", "untracked"])
def test_verify_rejects_a_modified_tree(tmp_path, upstream, change):
    _, pin = upstream
    vendor.sync_checkout(directory=tmp_path / "TorchSSL", pin=pin)
    target = tmp_path / "TorchSSL" / ("fixmatch.py" if change == "modified" else "notes.txt")
    target.write_text("edited\n")
    with pytest.raises(vendor.VendorError, match=f"local changes .*{target.name}.*must run unmodified"):
        vendor.verify_checkout(tmp_path / "TorchSSL", pin)


def test_files_its_own_gitignore_ignores_leave_the_tree_clean(tmp_path, upstream):
    _, pin = upstream
    vendor.sync_checkout(directory=tmp_path / "TorchSSL", pin=pin)
    (tmp_path / "TorchSSL" / "saved_models").mkdir()
    (tmp_path / "TorchSSL" / "saved_models" / "latest_model.pth").write_bytes(b"weights")
    assert vendor.verify_checkout(tmp_path / "TorchSSL", pin).clean


def test_sync_never_overwrites_local_changes(tmp_path, upstream):
    _, pin = upstream
    vendor.sync_checkout(directory=tmp_path / "TorchSSL", pin=pin)
    (tmp_path / "TorchSSL" / "fixmatch.py").write_text("my experiment\n")
    with pytest.raises(vendor.VendorError, match="sync does not overwrite them"):
        vendor.sync_checkout(directory=tmp_path / "TorchSSL", pin=pin)
    assert (tmp_path / "TorchSSL" / "fixmatch.py").read_text() == "my experiment\n"


def test_verify_says_which_command_fetches_a_missing_checkout(tmp_path, upstream):
    _, pin = upstream
    with pytest.raises(vendor.VendorError, match=r"does not exist; `bench vendor sync` fetches it"):
        vendor.verify_checkout(tmp_path / "TorchSSL", pin)


def test_a_folder_that_is_not_a_checkout_is_refused(tmp_path, upstream):
    _, pin = upstream
    (tmp_path / "TorchSSL").mkdir()
    (tmp_path / "TorchSSL" / "stray.txt").write_text("x")
    with pytest.raises(vendor.VendorError, match="is not a git checkout of TorchSSL"):
        vendor.sync_checkout(directory=tmp_path / "TorchSSL", pin=pin)


def test_a_source_without_the_pinned_commit_is_refused_and_leaves_nothing(tmp_path, upstream):
    _, pin = upstream
    missing = vendor.Pin(url=pin.url, commit="0" * 40)
    with pytest.raises(vendor.VendorError, match="does not contain the pinned TorchSSL commit 000000000000"):
        vendor.sync_checkout(directory=tmp_path / "TorchSSL", pin=missing)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["upstream"]


def test_an_unreachable_source_is_one_sentence_and_leaves_nothing(tmp_path, upstream):
    _, pin = upstream
    (tmp_path / "not-a-repo").mkdir()
    with pytest.raises(vendor.VendorError, match=r"could not fetch TorchSSL from .*not-a-repo \(.+\)\.$"):
        vendor.sync_checkout(source=f"file://{tmp_path / 'not-a-repo'}", directory=tmp_path / "TorchSSL", pin=pin)
    assert not (tmp_path / "TorchSSL").exists()
    assert not list(tmp_path.glob(".TorchSSL.partial-*"))


def test_an_offline_sync_from_the_pinned_url_names_the_source_option(tmp_path, monkeypatch):
    monkeypatch.setenv(vendor.CHECKOUT_ENV, str(tmp_path / "TorchSSL"))
    for variable in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")  # nothing listens there: github.com is unreachable
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    result = CliRunner().invoke(main, ["vendor", "sync"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    (message,) = result.output.strip().splitlines()
    assert message.startswith(f"Error: could not fetch TorchSSL from {vendor.read_pin().url} (")
    assert "`bench vendor sync --source <a TorchSSL bundle or local clone>`" in message
    assert not (tmp_path / "TorchSSL").exists()


def test_cli_sync_from_a_missing_path_exits_1_with_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv(vendor.CHECKOUT_ENV, str(tmp_path / "TorchSSL"))
    result = CliRunner().invoke(main, ["vendor", "sync", "--source", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: the source {tmp_path / 'nowhere'} does not exist; pass a git URL "
                                     f"or the path of a TorchSSL clone or mirror.")


def test_cli_status_of_a_missing_checkout_names_the_sync_command(tmp_path, monkeypatch):
    monkeypatch.setenv(vendor.CHECKOUT_ENV, str(tmp_path / "TorchSSL"))
    result = CliRunner().invoke(main, ["vendor", "status"])
    assert result.exit_code == 1
    assert "does not exist; `bench vendor sync` fetches it." in result.output
    assert "Traceback" not in result.output


def test_cli_syncs_the_real_torchssl_from_a_local_source_and_reports_it(tmp_path, monkeypatch):
    source = _real_torchssl_source()
    monkeypatch.setenv(vendor.CHECKOUT_ENV, str(tmp_path / "TorchSSL"))
    synced = CliRunner().invoke(main, ["vendor", "sync", "--source", str(source)])
    assert synced.exit_code == 0, synced.output
    status = CliRunner().invoke(main, ["vendor", "status"])
    assert status.exit_code == 0, status.output
    assert f"commit: {vendor.read_pin().commit} (matches the pin)" in status.output
    assert "tree:   clean" in status.output
    assert (tmp_path / "TorchSSL" / "config" / "fixmatch" / "fixmatch_cifar10_40_0.yaml").exists()


def test_cli_status_of_a_modified_real_checkout_exits_1(tmp_path, monkeypatch):
    source = _real_torchssl_source()
    monkeypatch.setenv(vendor.CHECKOUT_ENV, str(tmp_path / "TorchSSL"))
    vendor.sync_checkout(str(source))
    with (tmp_path / "TorchSSL" / "fixmatch.py").open("a") as file:
        file.write("# edited\n")
    status = CliRunner().invoke(main, ["vendor", "status"])
    assert status.exit_code == 1
    assert "tree:   1 local change(s)" in status.output
    assert "M fixmatch.py" in status.output and "TorchSSL must run unmodified" in status.output
