"""`bench run`'s plan: the resolved configuration of every planned run, and which runs are the same run."""

from harness.plan import GridOptions, plan_grid
from implementations.ledger import TORCHSSL_CHOICES
from tests.fixtures_data import SUBSET_DIR, torchssl_checkout


def test_speed_flags_override_the_preset_and_unset_ones_keep_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    options = GridOptions(labels="40", seeds="0,1", preset="smoke", data_dir=SUBSET_DIR, device="cpu",
                          output_dir=tmp_path / "runs", precision="bf16", augmentation="pil")
    plan = plan_grid(options)
    assert len(plan.runs) == 2
    for run in plan.runs:
        assert run.config.precision == "bf16" and run.config.augmentation == "pil"
        assert run.config.channels_last is True and run.config.compile is False  # the preset's
    assert {run.run_key for run in plan.runs} == {run.run_key for run in plan_grid(options).runs}
    default_keys = {run.run_key for run in plan_grid(GridOptions(
        labels="40", seeds="0,1", preset="smoke", data_dir=SUBSET_DIR, device="cpu", output_dir=tmp_path / "runs")).runs}
    assert default_keys.isdisjoint(run.run_key for run in plan.runs)  # another setting is another run


def _keys_by_impl(tmp_path, **flags) -> dict[str, str]:
    options = GridOptions(labels="40", seeds="0", preset="smoke", impl="own,own-as-torchssl,torchssl",
                          data_dir=SUBSET_DIR, device="cpu", output_dir=tmp_path / "runs", **flags)
    return {run.impl: run.run_key for run in plan_grid(options).runs}


def test_an_own_only_flag_makes_new_own_runs_and_keeps_the_torchssl_run(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    torchssl_checkout()
    default = _keys_by_impl(tmp_path)
    for flags in ({"precision": "bf16"}, {"augmentation": "pil"}, {"channels_last": False}, {"compile": True}):
        changed = _keys_by_impl(tmp_path, **flags)
        assert changed["torchssl"] == default["torchssl"], flags
        assert changed["own"] != default["own"], flags
    assert _keys_by_impl(tmp_path, eval_interval=10)["torchssl"] != default["torchssl"]  # a field TorchSSL reads


def test_own_as_torchssl_runs_with_every_ledger_switch_at_torchssls_value(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    torchssl_checkout()
    options = GridOptions(labels="40", seeds="0", preset="smoke", impl="own,own-as-torchssl", data_dir=SUBSET_DIR,
                          device="cpu", output_dir=tmp_path / "runs", precision="bf16")
    configs = {run.impl: run.config for run in plan_grid(options).runs}
    assert configs["own"].precision == "bf16" and configs["own"].randaugment_ops == 2
    for field, value in TORCHSSL_CHOICES.items():
        assert getattr(configs["own-as-torchssl"], field) == value, field


def test_a_torn_split_file_in_the_output_dir_is_written_anew_from_the_plan(tmp_path, monkeypatch):
    from harness.layout import save_splits, split_path
    from harness.splits import LabelSplit

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    plan = plan_grid(GridOptions(labels="40", seeds="0", preset="smoke", data_dir=SUBSET_DIR, device="cpu",
                                 output_dir=tmp_path / "runs"))
    (run,) = plan.runs
    save_splits(plan)
    stem = split_path(plan.output_dir, run.split)
    npy = stem.with_name(stem.name + ".npy")
    npy.write_bytes(npy.read_bytes()[:40])  # torn by a kill or a full disk
    save_splits(plan)
    assert LabelSplit.load(stem).digest == run.split.digest


# The keys the code before compile_augmentation existed (commit 64bedd8) gave these runs: a store made then must
# find its runs again, so that nothing is trained twice.
KEYS_OF_EARLIER_STORES = {"own": "own-40-0-smoke-abce9e65ab", "own-as-torchssl": "own-as-torchssl-40-0-smoke-1b9efbc46c",
                          "torchssl": "torchssl-40-0-smoke-5ad347128b"}


def test_run_keys_stay_those_of_earlier_stores_and_a_compiled_augmentation_is_the_same_run(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    torchssl_checkout()
    assert _keys_by_impl(tmp_path) == KEYS_OF_EARLIER_STORES
    assert _keys_by_impl(tmp_path, compile_augmentation=True) == KEYS_OF_EARLIER_STORES
