"""Every `experiment=` config composes, and every one trains end to end at a tiny size (the
sizes are overridden; what the experiment chooses beyond them, its launcher aside, is kept)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from vaesae.config import validate_config
from vaesae.records import read_metrics_csv
from vaesae.train import CONF_DIR, train

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))

# Seconds per run: 2 training steps per epoch, a 1-epoch squeeze and 1 held epoch, no DCI, no
# pictures, no W&B.
TINY = [
    "data.batch_size=64",
    "data.epoch_size=128",
    "data.eval_size=300",
    "data.eval_batch_size=300",
    "schedule.schedule_epochs=1",
    "schedule.hold_epochs=1",
    "metrics.dci_epochs=[]",
    "pictures.epochs=[]",
    "trainer.threads=1",
    "logger=none",
]


def compose_experiment(name: str, *overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "train", overrides=[f"experiment={name}", *overrides], return_hydra_config=hydra
        )


def test_the_documented_experiments_exist():
    assert {"smoke", "demo", "paper", "falsify", "falsify_cpu", "arms_cpu"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_sweep_value_of_an_experiment_composes(experiment):
    params = compose_experiment(experiment, hydra=True).hydra.sweeper.params or {}
    for key, choices in params.items():
        for value in str(choices).split(","):
            node = compose_experiment(experiment, f"{key}={value}")[key]
            # A group (dataset, method, arm) names its option; a plain setting (seed) is the value.
            assert str(node.name if isinstance(node, DictConfig) else node) == value


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_smoke_runs(experiment, tmp_path):
    cfg = compose_experiment(experiment, *TINY)
    validate_config(cfg)
    assert train(cfg, tmp_path)["status"] == "completed"
    rows = read_metrics_csv(tmp_path / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert all(0.0 <= r["dead/primary"] <= 1.0 for r in rows)
