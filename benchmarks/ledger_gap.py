"""Benchmark: does the difference ledger explain the accuracy gap between own and TorchSSL?

own (the paper's choices), own-as-torchssl (own with every ledger switch at TorchSSL's choice) and
torchssl (TorchSSL's own code) train on the same splits and images with the real `bench run`: the `cpu`
preset, 250 labels, seeds 0-2 by default, on the real CIFAR-10 subset, into their own MLflow store. The
numbers are then read from that store: top-1 of the EMA model at the last evaluation, mean ± std per
implementation, and for each pair the report compares (own − torchssl, own − own-as-torchssl,
own-as-torchssl − torchssl) the verdict `bench report` gives over the seeds both have (--margin, in percentage
points); the last line says what the verdict on own-as-torchssl − torchssl means for the ledger.
`bench report --output-dir <store>` turns the same store into the full report.

    python benchmarks/ledger_gap.py [--seeds 0,1,2] [--labels 250] [--preset cpu] [--output-dir DIR] [--max-parallel N]
    python benchmarks/ledger_gap.py --read-only --seeds 0,1     # only read what the store holds

Interrupted? Run it again: `bench run` skips finished runs and resumes the others. Each seed trains three
`cpu`-preset runs: over an hour on a 2-core CPU (TorchSSL's and own-as-torchssl's runs are the slow ones).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

from common import REPO_ROOT, SUBSET_DIR

from harness import tracking
from harness.report.verdicts import DEFAULT_MARGIN, EQUIVALENT, HIGHER, LOWER, ONE_SEED, verdict
from implementations import comparisons, interface

IMPLEMENTATIONS = ("own", "own-as-torchssl", "torchssl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--labels", type=int, default=250)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--max-parallel", type=int, default=1, help="runs at once (each then gets its share of the cores)")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                        help="equivalence margin of the verdicts, in percentage points (as bench report --margin)")
    parser.add_argument("--read-only", action="store_true",
                        help="train nothing: read the finished runs of these seeds that the store holds")
    args = parser.parse_args()
    output_dir = args.output_dir or str(REPO_ROOT / "runs" / f"ledger_gap-{args.preset}-{args.labels}")
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    completed = None if args.read_only else subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--impl", ",".join(IMPLEMENTATIONS), "--labels", str(args.labels),
         "--seeds", args.seeds, "--preset", args.preset, "--device", "cpu", "--data-dir", str(SUBSET_DIR),
         "--output-dir", output_dir, "--max-parallel", str(args.max_parallel)], cwd=REPO_ROOT, env=environment)
    if completed is not None and completed.returncode != 0:
        raise SystemExit(f"bench run ended with exit code {completed.returncode}; run this again to resume.")

    client = tracking.resolve_store(output_dir).client()
    experiment = client.get_experiment_by_name(interface.DEFAULT_EXPERIMENT)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    top1: dict[str, dict[int, float]] = {impl: {} for impl in IMPLEMENTATIONS}
    for run in tracking.search_runs_by_tags(client, experiment.experiment_id, {tracking.ROLE_TAG: tracking.CHILD}):
        tags = run.data.tags
        if run.info.status != "FINISHED" or int(tags["labels"]) != args.labels or tags["preset"] != args.preset:
            continue
        seed = int(tags["seed"])
        if seed in seeds and seed not in top1[tags["impl"]]:  # newest first: the newest finished run counts
            top1[tags["impl"]][seed] = 100 * run.data.metrics[interface.EVAL_TOP1]

    print(f"\n{args.preset} preset, {args.labels} labels, seeds {', '.join(map(str, seeds))}; top-1 % of the EMA model at "
          f"the last evaluation, real CIFAR-10 subset ({output_dir}):")
    for impl in IMPLEMENTATIONS:
        values = [top1[impl][seed] for seed in seeds if seed in top1[impl]]
        if not values:
            print(f"  {impl:16s} no finished run")
            continue
        spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        print(f"  {impl:16s} {statistics.mean(values):.2f}{spread}   (seeds {', '.join(map(str, sorted(top1[impl])))}: "
              f"{', '.join(f'{v:.2f}' for v in values)})")
    verdicts = {}
    for first, second in comparisons():
        paired = [seed for seed in seeds if seed in top1[first] and seed in top1[second]]
        found = verdict(first, second, [top1[first][seed] - top1[second][seed] for seed in paired], args.margin)
        verdicts[first, second] = found
        print(f"  {first} − {second}: " + (found.words() if found is not None else "no paired seed"))
    print(ledger_sentence(verdicts.get(("own-as-torchssl", "torchssl"))))


def ledger_sentence(found) -> str:
    """Whether the ledger explains the gap, from the verdict on own-as-torchssl − torchssl."""
    if found is None or found.kind == ONE_SEED:
        return "Fewer than two paired seeds of own-as-torchssl and torchssl cannot tell whether the ledger explains the gap."
    if found.kind == EQUIVALENT:
        return (f"The ledger explains the gap to within ±{found.margin:g} pp: own-as-torchssl and torchssl are equivalent "
                "at that margin.")
    if found.kind in (LOWER, HIGHER):
        return (f"The ledger does not explain the gap: own-as-torchssl is {found.kind} than torchssl by "
                f"{abs(found.mean):.2f} pp, beyond what these seeds' spread allows.")
    return f"Undecided: these paired seeds cannot tell whether the ledger explains the gap ({found.words()})."

if __name__ == "__main__":
    main()
