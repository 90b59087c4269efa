"""Session set-up shared by every test module.

The TorchSSL reference: when ../shared/mirrors/TorchSSL.bundle is beside the project (here and in CI),
the pinned checkout is synced from it once, before any test runs, so that no TorchSSL test is skipped for
want of it. A failed sync fails the session; without the bundle, an existing checkout is used, and the
TorchSSL tests skip with the reason only when there is neither.
"""

from __future__ import annotations

import pytest

from harness import vendor
from tests.fixtures_data import TORCHSSL_BUNDLE


def pytest_sessionstart(session: pytest.Session) -> None:
    if not TORCHSSL_BUNDLE.exists():
        return
    try:
        vendor.verify_checkout()
    except vendor.VendorError:
        try:
            vendor.sync_checkout(str(TORCHSSL_BUNDLE))
        except vendor.VendorError as error:
            raise pytest.UsageError(f"The TorchSSL checkout cannot be synced from {TORCHSSL_BUNDLE}: {error}") from None


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of small batches: on a busy 2-core machine two intra-op threads wait for each other far longer
    than the work takes. Restored for the other test modules."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
