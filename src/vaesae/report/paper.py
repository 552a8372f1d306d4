"""The paper's published figures (seeds/000: dead rate at k = 50, mean ± std over seeds, in %)."""

from __future__ import annotations

__all__ = ["PAPER_DEAD_PCT", "PAPER_RATIO", "PAPER_PROTOCOL"]

# (dataset, method) -> (mean %, std %) of the dead-neuron rate at k_end.
PAPER_DEAD_PCT: dict[tuple[str, str], tuple[float, float]] = {
    ("dsprites", "topk"): (34.4, 0.9),
    ("shapes3d", "topk"): (62.7, 1.3),
    ("dsprites", "l1"): (41.7, 4.4),
    ("shapes3d", "l1"): (90.6, 0.5),
}
# method -> Shapes3D / dSprites dead-rate ratio.
PAPER_RATIO: dict[str, float] = {"topk": 1.8, "l1": 2.2}
# The settings that make a run the paper's protocol (conf/experiment/paper.yaml).
PAPER_PROTOCOL: dict[str, object] = {
    "schedule.k_start": 500,
    "schedule.k_end": 50,
    "schedule.schedule_epochs": 50,
    "schedule.hold_epochs": 100,
    "data.epoch_size": None,
    "data.eval_size": 10000,
}
