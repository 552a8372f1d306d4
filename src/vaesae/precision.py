"""The training fast path: which numeric precision and memory layout a run trains with.

``trainer.precision`` and ``trainer.channels_last`` accept ``auto``, resolved here once per run:

- precision ``auto``: ``bf16-mixed`` (bf16 autocast, fp32 weights and optimizer) on a GPU and on a
  CPU whose oneDNN has native bf16 kernels (AVX-512 BF16 or AMX, as reported by
  ``torch.ops.mkldnn._is_mkldnn_bf16_supported``); ``32-true`` elsewhere, because on a CPU without
  them bf16 is emulated and measured several times slower than fp32 (docs: Benchmarks).
- channels_last ``auto``: on, everywhere: NHWC convolutions beat the NCHW default with fp32 and
  with bf16 on the CPUs measured (docs: Benchmarks), and cuDNN prefers NHWC for bf16 too.

Only training runs on the fast path: Lightning's autocast wraps the training step, and the
per-epoch evaluation (dead rules, MIG, semantics) runs outside it in fp32, so metric definitions
do not depend on the path.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = [
    "PRECISIONS",
    "CHANNELS_LAST",
    "cpu_has_native_bf16",
    "resolve_precision",
    "resolve_channels_last",
]

PRECISIONS = ("auto", "32-true", "bf16-mixed")
# What a run trains in: Lightning's precision names for the two paths this tool offers.
TrainPrecision = Literal["32-true", "bf16-mixed"]
CHANNELS_LAST = ("auto", True, False)


def cpu_has_native_bf16() -> bool:
    """True when this CPU runs bf16 matrix/convolution kernels natively (AVX-512 BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(setting: str | int, accelerator: str) -> TrainPrecision:
    """Lightning precision for ``trainer.precision`` on ``accelerator`` ("cpu" or "gpu")."""
    setting = "32-true" if str(setting) in ("32", "32-true") else str(setting)
    if setting not in PRECISIONS:
        raise ValueError(
            f"trainer.precision={setting!r} is not valid; choose one of: auto, 32, bf16-mixed"
        )
    if setting == "32-true" or setting == "bf16-mixed":
        return setting
    native = accelerator == "gpu" or cpu_has_native_bf16()
    return "bf16-mixed" if native else "32-true"


def resolve_channels_last(setting: str | bool, accelerator: str) -> bool:
    """Whether to train in NHWC memory layout, for ``trainer.channels_last``."""
    if setting not in CHANNELS_LAST:
        raise ValueError(
            f"trainer.channels_last={setting!r} is not valid; choose one of: auto, true, false"
        )
    return True if setting == "auto" else bool(setting)
