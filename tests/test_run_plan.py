"""`bench run`'s speed knobs reach the resolved configuration of every planned run."""

from harness.runner import GridOptions, plan_grid
from tests.fixtures_data import SUBSET_DIR


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
