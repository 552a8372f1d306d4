"""Sparsity schedules k(t), the L1 coefficient controller, and the Lightning callback using both."""

from vaesae.sparsity.callback import GRANULARITIES, SparsityScheduleCallback
from vaesae.sparsity.l1_controller import (
    L1_COEF_INIT,
    L1_COEF_MAX,
    L1_COEF_MIN,
    L1_ETA,
    update_l1_coef,
)
from vaesae.sparsity.schedule import (
    SCHEDULE_KINDS,
    KSchedule,
    k_schedule,
    schedule_end_epoch,
    total_epochs,
    validate_schedule,
)

__all__ = [
    "GRANULARITIES",
    "L1_COEF_INIT",
    "L1_COEF_MAX",
    "L1_COEF_MIN",
    "L1_ETA",
    "SCHEDULE_KINDS",
    "KSchedule",
    "SparsityScheduleCallback",
    "k_schedule",
    "schedule_end_epoch",
    "total_epochs",
    "update_l1_coef",
    "validate_schedule",
]
