"""The composed config of a seconds-long smoke run, shared by the tests that train one."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from vaesae.train import CONF_DIR

FAST = [
    "experiment=smoke",
    "data.epoch_size=256",
    "data.eval_size=400",
    "data.eval_batch_size=400",
    "trainer.threads=1",
]


def make_cfg(*overrides: str) -> DictConfig:
    """`conf/train.yaml` composed with FAST, then `overrides`."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[*FAST, *overrides])
