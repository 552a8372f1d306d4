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
    per training batch the smallest positive kept activation theta_b, the value at which the
    batch's top k * B was cut (as in Bussmann et al.'s code: a kept zero would pull it to 0);
    theta <- theta + momentum (theta_b - theta), the first batch copied. Bussmann et al. average
    theta_b over batches after training at a fixed k; the moving average follows k as the
    schedule lowers it. Before any training batch theta = 0
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
            s, kept = torch.relu(pre), flat
        else:
            values, indices = flat.topk(keep, sorted=False)
            kept = torch.relu(values)
            s = torch.zeros_like(flat).scatter(0, indices, kept).view_as(pre)
        # The smallest positive kept activation (the reference's threshold): a zero among the
        # kept, when fewer than k * B pre-activations are positive, would set the threshold to 0.
        kept = kept.detach().float()
        self._update_threshold(torch.where(kept > 0, kept, torch.inf).min())
        return s

    @torch.no_grad()
    def _update_threshold(self, cut: Tensor) -> None:
        """Fold the batch's cut into the moving threshold; a batch with no positive kept
        activation (cut = inf) leaves it unchanged."""
        blended = self.threshold + self.threshold_momentum * (cut - self.threshold)
        new = torch.where(self.threshold.isnan(), cut, blended)
        self.threshold.copy_(torch.where(cut.isinf(), self.threshold, new))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, threshold_momentum={self.threshold_momentum}"
