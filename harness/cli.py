"""`bench`: the command line. Each command parses its options and calls one harness function."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """ssl-bench: own FixMatch beside TorchSSL's, same splits, tracked in MLflow."""


# --- bench run / bench worker / bench ui: owned by harness/runner.py, harness/worker.py, harness/ui.py


# --- bench vendor: owned by harness/vendor.py


# --- bench report: owned by harness/report/


if __name__ == "__main__":
    main()
