"""Benchmark: does the difference ledger explain the accuracy gap between own and TorchSSL?

own (the paper's choices), own-as-torchssl (own with every ledger switch at TorchSSL's choice) and
torchssl (TorchSSL's own code) train on the same splits and images: the `cpu` preset, 250 labels, seeds
0-2 by default, on the real CIFAR-10 subset. Each run is a fresh process with the environment `bench run`
gives run processes. Prints top-1 at the last evaluation (EMA model), mean ± std per implementation, and
the paired differences own − torchssl and own-as-torchssl − torchssl with 95 % t intervals; the last
line says whether the ledger explains the gap.

    python benchmarks/ledger_gap.py [--seeds 0,1,2] [--labels 250] [--preset cpu] [--results FILE]

Finished runs are kept in the results file (default runs/benchmarks/ledger_gap-<preset>-<labels>.json), so an
interrupted benchmark continues where it stopped. About 25-35 minutes per seed on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO_ROOT, KeepingSink, subset_run_inputs

from harness.presets import resolve_preset
from harness.runner import with_kept_freed_memory
from implementations import configure, interface as names, load_implementation

IMPLEMENTATIONS = ("own", "own-as-torchssl", "torchssl")


def train_one(impl: str, preset: str, labels: int, seed: int) -> dict:
    """Runs in its own process."""
    config = configure(impl, resolve_preset(preset, seed=seed))
    sink = KeepingSink()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as work_dir:
        result = load_implementation(impl).train(subset_run_inputs(config, Path(work_dir), labels), sink)
    top1 = sink.metrics[names.EVAL_TOP1]
    return {"impl": impl, "seed": seed, "last_top1": result.final_metrics[names.EVAL_TOP1],
            "best_top1": max(top1.values()), "iterations": result.iterations,
            "minutes": (time.monotonic() - started) / 60}


def interval(differences: list[float]) -> str:
    from scipy import stats

    n = len(differences)
    mean = statistics.mean(differences)
    if n < 2:
        return f"{mean:+.2f} pp (one seed: no interval)"
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(differences) / math.sqrt(n)
    return f"{mean:+.2f} pp, 95 % interval [{mean - half:+.2f}, {mean + half:+.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--labels", type=int, default=250)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument("--one", nargs=2, metavar=("IMPL", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(train_one(args.one[0], args.preset, args.labels, int(args.one[1]))))
        return

    seeds = [int(seed) for seed in args.seeds.split(",")]
    results_path = args.results or REPO_ROOT / "runs" / "benchmarks" / f"ledger_gap-{args.preset}-{args.labels}.json"
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for seed in seeds:
        for impl in IMPLEMENTATIONS:
            key = f"{impl}/{seed}"
            if key in results:
                continue
            completed = subprocess.run(
                [sys.executable, __file__, "--preset", args.preset, "--labels", str(args.labels), "--one", impl, str(seed)],
                env=with_kept_freed_memory(dict(os.environ)), capture_output=True, text=True)
            if completed.returncode != 0:
                raise SystemExit(f"{impl} seed {seed} failed:\n{completed.stderr[-3000:]}")
            results[key] = json.loads(completed.stdout.strip().splitlines()[-1])
            results_path.write_text(json.dumps(results, indent=2))
            run = results[key]
            print(f"{impl:16s} seed {seed}: top-1 {100 * run['last_top1']:.2f} % (best {100 * run['best_top1']:.2f} %) "
                  f"in {run['minutes']:.1f} min", flush=True)

    top1 = {impl: [100 * results[f"{impl}/{seed}"]["last_top1"] for seed in seeds] for impl in IMPLEMENTATIONS}
    print(f"\n{args.preset} preset, {args.labels} labels, seeds {', '.join(map(str, seeds))}; top-1 % of the EMA model "
          "at the last evaluation, real CIFAR-10 subset:")
    for impl in IMPLEMENTATIONS:
        spread = f" ± {statistics.stdev(top1[impl]):.2f}" if len(seeds) > 1 else ""
        print(f"  {impl:16s} {statistics.mean(top1[impl]):.2f}{spread}   ({', '.join(f'{v:.2f}' for v in top1[impl])})")
    gap = [a - b for a, b in zip(top1["own"], top1["torchssl"])]
    remaining = [a - b for a, b in zip(top1["own-as-torchssl"], top1["torchssl"])]
    print(f"  own − torchssl:             {interval(gap)}")
    print(f"  own-as-torchssl − torchssl: {interval(remaining)}")
    if len(seeds) < 2:
        print("One seed cannot tell whether the ledger explains the gap.")
        return
    from scipy import stats

    half = stats.t.ppf(0.975, len(seeds) - 1) * statistics.stdev(remaining) / math.sqrt(len(seeds))
    explained = abs(statistics.mean(remaining)) <= half
    print(("The ledger explains the gap: " if explained else "The ledger does not explain the gap: ")
          + f"own-as-torchssl − torchssl is {statistics.mean(remaining):+.2f} pp, "
          + ("within" if explained else "outside") + f" ± {half:.2f} pp of zero over {len(seeds)} paired seeds "
          + f"(own − torchssl: {statistics.mean(gap):+.2f} pp).")


if __name__ == "__main__":
    main()
