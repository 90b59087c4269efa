"""`bench`: the command line. Each command parses its options and calls one harness function."""

from __future__ import annotations

from pathlib import Path

import click

from implementations.interface import DEFAULT_EXPERIMENT


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
def main() -> None:
    """ssl-bench: own FixMatch beside TorchSSL's, same splits, tracked in MLflow."""


def _store_options(output_dir_help: str):
    """--experiment, --tracking-uri and --output-dir, as `bench run` names the store (and `status`, `cancel`)."""
    def decorate(command):
        command = click.option("--output-dir", type=click.Path(path_type=Path), default=Path("runs"),
                               show_default=True, help=output_dir_help)(command)
        command = click.option("--tracking-uri", default=None, metavar="URI",
                               help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite under "
                                    "--output-dir).")(command)
        return click.option("--experiment", default=DEFAULT_EXPERIMENT, show_default=True,
                            help="MLflow experiment name.")(command)
    return decorate


# --- bench run / bench worker / bench ui: owned by harness/runner.py, harness/worker.py, harness/ui.py
@main.command("run", short_help="Run the grid algorithm × impl × labels × seeds, tracked in MLflow; resumable.")
@click.option("--labels", required=True, metavar="N[,N...]",
              help="Label counts, comma-separated, each a multiple of 10 (e.g. 40,250,4000).")
@click.option("--impl", default="own", show_default=True, metavar="NAME[,NAME...]",
              help="Implementations, comma-separated: own (the paper's choices), own-as-torchssl (own with every "
                   "ledger switch at TorchSSL's choice), torchssl (TorchSSL's own code).")
@click.option("--algorithm", default="fixmatch", show_default=True, metavar="NAME[,NAME...]",
              help="Methods, comma-separated: fixmatch, supervised (the labeled split only), pseudolabel, pimodel, "
                   "meanteacher, mixmatch, uda, flexmatch (own and torchssl), remixmatch, vat, freematch, softmatch "
                   "(torchssl only; own's runs of them are left out); each on the same split per labels and seed.")
@click.option("--seeds", default="0", show_default=True, metavar="S[,S...]",
              help="Seeds, comma-separated; each seed draws its own label split and initialisation.")
@click.option("--preset", default="paper", show_default=True, metavar="[paper|cpu|smoke]",
              help="Configuration: paper (the paper's protocol, GPU work), cpu (minutes on a CPU), smoke (checks "
                   "that everything runs).")
@click.option("--iterations", type=int, default=None, help="Override the preset's number of training iterations.")
@click.option("--eval-interval", type=int, default=None, help="Override the preset's evaluation interval (iterations).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: CUDA when present, else the CPU, said in one line (the paper preset then needs --device "
                   "cpu); cuda: refuse to start without a GPU.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("data"), show_default=True,
              help="Folder holding cifar-10-batches-py (or that folder itself).")
@click.option("--download", is_flag=True, help="Download CIFAR-10 into --data-dir when it is missing.")
@_store_options(output_dir_help="MLflow store (embedded), splits, checkpoints and logs.")
@click.option("--max-parallel", type=int, default=None,
              help="Runs at once (default: one per GPU when several are present, else 1); more than the GPUs share "
                   "them round-robin.")
@click.option("--gpus", default=None, metavar="LIST",
              help="Which GPUs the runs use, by the numbers this shell's CUDA sees (cuda:N), e.g. --gpus 2,3 "
                   "(default: all it sees; with CUDA_VISIBLE_DEVICES set, its entries, which each worker is given).")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default=None,
              help="Autocast precision of own runs (default: the preset's: auto for paper, i.e. bf16 on a GPU or an "
                   "AMX CPU and fp32 on other CPUs; fp32 for cpu and smoke; bf16 becomes fp16 + GradScaler on a GPU "
                   "without bf16).")
@click.option("--channels-last/--no-channels-last", default=None, help="channels_last memory format (own).")
@click.option("--compile/--no-compile", "compile", default=None, help="torch.compile the model (own; slow first call).")
@click.option("--compile-augmentation/--no-compile-augmentation", default=None,
              help="torch.compile the batched augmentation, draws kept eager: the same pixels in fewer kernels (own; "
                   "off by default until measured on a GPU; a first call of tens of seconds).")
@click.option("--augmentation", type=click.Choice(["batched", "pil"]), default=None,
              help="batched: on-device batch augmentation (default); pil: the per-image PIL reference (own).")
@click.option("--yes", is_flag=True,
              help="Start even when the grid would train for more than a day on this device (it says so first).")
@click.option("--executor", type=click.Choice(["local", "slurm"]), default="local", show_default=True,
              help="local: worker processes on this machine; slurm: one Slurm job per run (submitit), then return.")
@click.option("--slurm-config", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="TOML file of Slurm settings (keys as the options below: partition, account, time_minutes, "
                   "gpus_per_job, cpus_per_job, mem_gb, sbatch_lines, setup, …); options given here win.")
@click.option("--partition", default=None, help="Slurm partition.")
@click.option("--account", default=None, help="Slurm account.")
@click.option("--time-limit", "time_minutes", type=int, default=None,
              help="Minutes per job (default 1440); a longer run continues in requeued jobs.")
@click.option("--gpus-per-job", type=int, default=None, help="GPUs per job (default 1).")
@click.option("--cpus-per-job", type=int, default=None, help="CPUs per job (default 8).")
@click.option("--mem-gb", type=int, default=None, help="Memory per job in GB (default 32).")
@click.option("--sbatch", "sbatch_lines", multiple=True, metavar="OPTION",
              help="Extra sbatch option, e.g. --sbatch=--constraint=a100 (repeatable).")
@click.option("--setup", multiple=True, metavar="LINE",
              help="Shell line run before each job, e.g. 'source ~/venv/bin/activate' (repeatable).")
@click.option("--allow-sqlite", is_flag=True, help="--executor slurm on a sqlite store all the same.")
def run_command(slurm_config, partition, account, time_minutes, gpus_per_job, cpus_per_job, mem_gb, sbatch_lines,
                setup, **options) -> None:
    """Run the grid impl × labels × seeds, each run in its own process, tracked in MLflow.

    Running the same command again skips finished runs and resumes unfinished ones from their
    last checkpoint, in the same MLflow run. With --executor slurm each run is a Slurm job that is
    requeued at its time limit or on preemption and resumes from its checkpoint.
    """
    from harness.plan import GridOptions
    from harness.runner import run_grid

    if options["executor"] == "slurm":
        from harness.slurm import SlurmOptions

        try:
            options["slurm"] = SlurmOptions.from_file(
                slurm_config, partition=partition, account=account, time_minutes=time_minutes,
                gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job, mem_gb=mem_gb, sbatch_lines=sbatch_lines,
                setup=setup)
        except (ValueError, TypeError) as error:
            raise click.UsageError(str(error)) from None
    raise SystemExit(run_grid(GridOptions(**options)))


@main.command("status", short_help="Show each run submitted to Slurm: its job's state, MLflow status, iteration.")
@_store_options(output_dir_help="The --output-dir of `bench run`.")
def status_command(output_dir: Path, tracking_uri: str | None, experiment: str) -> None:
    """Show each run submitted with `bench run --executor slurm`: Slurm job and state, MLflow status, progress."""
    from harness.slurm import show_status

    raise SystemExit(show_status(output_dir, experiment, tracking_uri))


@main.command("cancel", short_help="Cancel the queued and running Slurm jobs of the submitted runs.")
@_store_options(output_dir_help="The --output-dir of `bench run`.")
def cancel_command(output_dir: Path, tracking_uri: str | None, experiment: str) -> None:
    """Cancel the queued and running Slurm jobs of the runs submitted with `bench run --executor slurm`; each run
    keeps its checkpoint, and the same `bench run` submits it again."""
    from harness.slurm import cancel_jobs

    raise SystemExit(cancel_jobs(output_dir, experiment, tracking_uri))


@main.command("worker", hidden=True)
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def worker_command(spec: Path) -> None:
    """Execute one run from its spec file (what `bench run` starts for each run)."""
    from harness.worker import main as worker_main

    raise SystemExit(worker_main([str(spec)]))


@main.command("ui", short_help="Open the MLflow UI on the runs' store.")
@click.option("--port", type=int, default=5000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind; 127.0.0.1 keeps the UI on this machine.")
@click.option("--output-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True,
              help="The --output-dir of `bench run` (its embedded MLflow store).")
@click.option("--tracking-uri", default=None, metavar="URI", help="Serve this MLflow store instead.")
def ui_command(port: int, host: str, output_dir: Path, tracking_uri: str | None) -> None:
    """Open the MLflow UI on the runs' store; Ctrl-C stops it."""
    from harness.ui import serve_ui

    raise SystemExit(serve_ui(output_dir, tracking_uri, host, port))



# --- bench parity: owned by harness/parity.py
@main.command("parity", short_help="Check own-as-torchssl against TorchSSL's code step by step; --list the ledger.")
@click.option("--labels", type=int, default=40, show_default=True, help="Label count of the split the batches come from.")
@click.option("--steps", type=int, default=10, show_default=True, help="Training iterations to compare.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split, the batches and the initial weights.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("data"), show_default=True,
              help="Folder holding cifar-10-batches-py (or that folder itself).")
@click.option("--download", is_flag=True, help="Download CIFAR-10 into --data-dir when it is missing.")
@click.option("--own-default", "own_defaults", multiple=True, metavar="FIELD",
              help="Leave this ledger switch at own's default (repeatable): shows what that difference changes.")
@click.option("--list", "list_ledger", is_flag=True, help="Print the difference ledger and exit.")
def parity_command(labels: int, steps: int, seed: int, data_dir: Path, download: bool,
                   own_defaults: tuple[str, ...], list_ledger: bool) -> None:
    """Check step by step that own, set to TorchSSL's choices, computes what TorchSSL's code computes.

    Same initial weights, the same fixed augmented batches; per step the logits, losses, mask, pseudo-labels,
    gradients, parameters, EMA, batch-norm statistics and learning rate are compared (WRN-28-2 on the CPU).
    Exit 1 beyond the fp32 tolerance.
    """
    from harness.parity import ParityOptions, format_ledger, run_parity

    if list_ledger:
        click.echo(format_ledger())
        return
    raise SystemExit(run_parity(ParityOptions(labels=labels, steps=steps, seed=seed, data_dir=data_dir,
                                              download=download, own_defaults=own_defaults)))


# --- bench vendor: owned by implementations/torchssl/checkout.py
@main.group(short_help="Fetch and check the pinned TorchSSL checkout.")
def vendor() -> None:
    """The pinned TorchSSL checkout that `--impl torchssl` runs (see vendor/torchssl.toml)."""


@vendor.command("sync")
@click.option("--source", metavar="URL|PATH", default=None,
              help="Git URL or local clone/mirror to fetch from (default: the pin's URL).")
def vendor_sync(source: str | None) -> None:
    """Fetch TorchSSL at the pinned commit into the checkout folder and verify it."""
    from implementations.torchssl import checkout as torchssl_checkout

    try:
        info = torchssl_checkout.sync_checkout(source)
    except torchssl_checkout.VendorError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"TorchSSL {info.commit} checked out at {info.path} (clean, matches the pin).")


@vendor.command("status")
def vendor_status() -> None:
    """Print the checkout's path, commit and cleanliness; exit 1 unless it is the pin, unmodified."""
    from implementations.torchssl import checkout as torchssl_checkout

    try:
        pin = torchssl_checkout.read_pin()
        info = torchssl_checkout.inspect_checkout()
    except torchssl_checkout.VendorError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"path:   {info.path}")
    click.echo(f"commit: {info.commit} ({'matches the pin' if info.commit == pin.commit else f'pin is {pin.commit}'})")
    click.echo(f"tree:   {'clean' if info.clean else f'{len(info.changes)} local change(s)'}")
    problem = torchssl_checkout.checkout_problem(info, pin)
    if problem:
        raise click.ClickException(problem)



# --- bench report: owned by harness/report/
@main.command("report", short_help="Turn the runs in MLflow into a report (Markdown and PDF).")
@click.option("--experiment", default=None, metavar="NAME",
              help="MLflow experiment to report on [default: cifar10-fixmatch].")
@click.option("--run", "parent_run_id", default=None, metavar="PARENT_ID",
              help="Report on one parent run (one label count and preset) instead of a whole experiment.")
@click.option("--out", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Report folder [default: reports/<experiment>]; a previous report there is replaced.")
@click.option("--format", "formats", default="md,pdf", show_default=True, metavar="md,pdf",
              help="What to write: md (report.md + figures/), pdf (report.pdf), or both.")
@click.option("--tracking-uri", default=None, metavar="URI",
              help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite under --output-dir).")
@click.option("--output-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True,
              help="The --output-dir of `bench run` (its embedded MLflow store).")
@click.option("--margin", type=float, default=1.0, show_default=True, metavar="PP",
              help="Equivalence margin of the verdicts, in percentage points of top-1: two implementations are "
                   "equivalent when the paired seeds show their difference within ±PP (TOST at 5 %).")
@click.option("--targets", default="0.5x,0.8x,0.9x,published", show_default=True, metavar="LIST",
              help="Top-1 targets of the time-to-accuracy table: Nx is N times the section's best final top-1, a "
                   "plain number a top-1 in % (e.g. 40), published the published number where there is one.")
def report_command(experiment: str | None, parent_run_id: str | None, out: Path | None, formats: str,
                   tracking_uri: str | None, output_dir: Path, margin: float, targets: str) -> None:
    """Turn the runs in MLflow into a report: tables, figures, Markdown and PDF.

    Runs still RUNNING, or FAILED/KILLED, are listed apart and never averaged in; runs of different
    presets or training protocols get a section each and are never pooled.
    """
    from harness.report import ReportError, make_report, resolve_tracking_uri

    if experiment and parent_run_id:
        raise click.UsageError("Pass either --experiment or --run, not both.")
    try:
        outcome = make_report(
            resolve_tracking_uri(tracking_uri, output_dir), experiment=experiment, parent_run_id=parent_run_id,
            out_dir=out, formats=tuple(part.strip() for part in formats.split(",") if part.strip()),
            margin=margin, targets=targets,
        )
    except ReportError as error:
        raise click.ClickException(str(error)) from None
    unfinished = sum(outcome.unfinished_runs.values())
    for line in outcome.verdicts:
        click.echo(f"Verdict: {line}")
    click.echo(f"{outcome.finished_runs} finished run(s) in {len(outcome.sections)} section(s): "
               f"{'; '.join(title.replace('`', '') for title in outcome.sections) or 'none'}.")
    if unfinished:
        statuses = ", ".join(f"{count} {status}" for status, count in sorted(outcome.unfinished_runs.items()))
        click.echo(f"{unfinished} unfinished run(s) ({statuses}) listed apart, not averaged in.")
    if outcome.markdown:
        click.echo(f"Markdown: {outcome.markdown} ({len(outcome.figures)} figures in {outcome.out_dir / 'figures'})")
    if outcome.pdf:
        click.echo(f"PDF:      {outcome.pdf} ({outcome.pdf_pages} pages)")


if __name__ == "__main__":
    main()
