"""BatchTopK (Bussmann, Leask and Nanda 2024, "BatchTopK Sparse Autoencoders"): a top-k over
the whole batch instead of per sample, and a fixed threshold at inference."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaesae.models.activations import TopK, register_activation


@register_activation("batchtopk")
class BatchTopK(TopK):
    """k active units per sample on average over the batch.

    Training, on a batch of B samples: s = ReLU(pre) on the k * B largest pre-activations of the
    whole (B, width) batch, 0 elsewhere, so a sample may use more or fewer than k units (at most
    k * B non-zeros in the batch, exactly k * B when at least that many pre-activations are
    positive). The gradient reaches only the kept entries.

    Evaluation: s_i = pre_i * 1[pre_i > theta], one threshold for every unit, so a sample's codes
    no longer depend on the rest of its batch. Estimator of theta (a buffer, saved in checkpoints):
    per training batch the smallest kept activation theta_b = max(0, min kept ReLU(pre)), the value
    at which the batch's top k * B was cut; theta <- theta + momentum (theta_b - theta), the first
    batch copied. Bussmann et al. average theta_b over batches after training at a fixed k; the
    moving average follows k as the schedule lowers it. Before any training batch theta = 0
    (evaluation is ReLU).
    """

    control = "k"
    threshold: Tensor

    def __init__(self, width: int, k: int | None = None, threshold_momentum: float = 0.1) -> None:
        super().__init__(width, k)
        if not 0.0 < threshold_momentum <= 1.0:
            raise ValueError(f"batchtopk threshold_momentum={threshold_momentum} must be in (0, 1]")
        self.threshold_momentum = threshold_momentum
        self.register_buffer("threshold", torch.full((), math.nan))

    def forward(self, pre: Tensor) -> Tensor:
        if not self.training:
            theta = torch.nan_to_num(self.threshold, nan=0.0).to(pre.dtype)
            return pre * (pre > theta)
        flat = pre.reshape(-1)
        keep = self.k * pre.shape[0]
        if keep >= flat.numel():
            s, cut = torch.relu(pre), pre.new_zeros(())
        else:
            values, indices = flat.topk(keep, sorted=False)
            kept = torch.relu(values)
            s = torch.zeros_like(flat).scatter(0, indices, kept).view_as(pre)
            cut = kept.detach().min()
        self._update_threshold(cut.float())
        return s

    @torch.no_grad()
    def _update_threshold(self, cut: Tensor) -> None:
        blended = self.threshold + self.threshold_momentum * (cut - self.threshold)
        self.threshold.copy_(torch.where(self.threshold.isnan(), cut, blended))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, threshold_momentum={self.threshold_momentum}"
