"""Named configurations: the paper's protocol, and CPU-sized ones that finish here.

Precision follows what was measured fastest (benchmarks/train_throughput.py). The paper preset takes
"auto": bf16 autocast on a GPU and on a CPU with AMX, fp32 on other CPUs (where oneDNN's bf16 convolutions
were measured slower than its fp32 ones: docs/performance.md). The narrow CPU-sized networks train in fp32,
where the casts around each small convolution cost more than bf16 saves.
"""

from implementations.interface import TrainConfig

PRESETS: dict[str, TrainConfig] = {
    # FixMatch paper / TorchSSL fixmatch_cifar10_*: WRN-28-2, 2^20 iterations of 64 + 7·64 + 7·64 images.
    "paper": TrainConfig(preset="paper"),
    # A few dozen iterations of a tiny WRN: checks that everything runs, learns nothing.
    "smoke": TrainConfig(
        preset="smoke", iterations=40, labeled_batch_size=8, unlabeled_ratio=2, depth=10, widen_factor=1,
        eval_interval=20, log_interval=5, checkpoint_interval=20, eval_batch_size=512, precision="fp32",
    ),
    # Minutes on a 2-core CPU, long enough for the accuracy to move. The EMA decay is shortened to
    # 0.99 (a 100-iteration horizon): at 0.999 the evaluated model would still be mostly its initialisation.
    "cpu": TrainConfig(
        preset="cpu", iterations=2000, labeled_batch_size=32, unlabeled_ratio=3, depth=16, widen_factor=1, ema_decay=0.99,
        eval_interval=250, log_interval=25, checkpoint_interval=250, eval_batch_size=512, precision="fp32",
    ),
}


def resolve_preset(name: str, **overrides) -> TrainConfig:
    """The preset with the given fields replaced (fields left as None keep the preset's value)."""
    if name not in PRESETS:
        raise KeyError(name)
    changes = {key: value for key, value in overrides.items() if value is not None}
    return PRESETS[name].replace(**changes)
