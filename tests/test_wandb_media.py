"""W&B media: the per-neuron table and histogram values, and an offline run's files and keys."""

from __future__ import annotations

import json
import math

import pytest
import torch
from smoke_config import make_cfg

from vaesae.evaluation import EvalResult
from vaesae.records import read_metrics_csv
from vaesae.train import train
from vaesae.wandb_media import NEURON_COLUMNS, firing_log10, neuron_table


def _result() -> EvalResult:
    nan = math.nan
    return EvalResult(
        scalars={},
        dead={"never": torch.tensor([True, False, False])},
        frequency=torch.tensor([0.0, 0.01, 0.5], dtype=torch.float64),
        normalized_mi=torch.tensor([[0.0, 0.0], [0.1, 0.7], [0.6, 0.2]], dtype=torch.float64),
        alignment=torch.tensor([nan, 0.6, 0.4], dtype=torch.float64),
    )


def test_neuron_table_rows_name_the_best_factor_and_leave_undescribed_units_empty():
    rows = neuron_table(_result(), ("shape", "scale"), "never")
    assert len(rows[0]) == len(NEURON_COLUMNS)
    assert rows == [
        [0, 0.0, None, None, True],
        [1, 0.01, 0.6, "scale", False],
        [2, 0.5, 0.4, "shape", False],
    ]


def test_firing_histogram_values_are_log10_of_the_units_that_fire():
    values = firing_log10(torch.tensor([0.0, 0.01, 1.0, 0.001], dtype=torch.float64))
    assert values == pytest.approx([-2.0, 0.0, -3.0], abs=1e-12)


def test_offline_run_holds_the_media_files_and_the_summary_keys(tmp_path):
    import wandb

    cfg = make_cfg(
        "logger=wandb",
        "schedule.schedule_epochs=1",
        "pictures.epochs=[first,final]",
        "pictures.views=[frequency]",
    )
    try:
        train(cfg, tmp_path)
        # Offline, the summary lives in the run's binary log: read it from the live run.
        summary = dict(wandb.run.summary)
    finally:
        wandb.finish()
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    images = sorted(p.name for p in (run / "files" / "media" / "images").rglob("*.png"))
    # Two media epochs (0 and 1): reconstructions and the three neuron pictures at each.
    for key in ("reconstructions", "neurons_frequency_top", "neurons_frequency_traversal"):
        assert sum(name.startswith(key) for name in images) == 2, images
    tables = list((run / "files" / "media" / "table").rglob("*.table.json"))
    assert len(tables) == 2
    table = json.loads(tables[0].read_text())
    assert table["columns"] == NEURON_COLUMNS and len(table["data"]) == cfg.model.width
    assert summary["media/firing_log10_frequency"]["_type"] == "histogram"
    metrics = read_metrics_csv(tmp_path / "metrics.csv")
    assert summary["dead_final"] == pytest.approx(metrics[-1]["dead/primary"])
    assert summary["dead_at_k_end"] == pytest.approx(metrics[1]["dead/primary"])
    assert summary["epoch"] == 1
