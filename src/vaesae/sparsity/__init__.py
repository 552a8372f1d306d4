"""Sparsity schedules k(t), the L1 coefficient controller, and the Lightning callback using both."""

from vaesae.sparsity.callback import GRANULARITIES, SparsityScheduleCallback
from vaesae.sparsity.l1_controller import (
    L1_COEF_INIT,
    L1_COEF_MAX,
    L1_COEF_MIN,
    L1Gains,
    L1Inputs,
    L1State,
    l1_advance,
    l1_control_step,
    l1_initial_state,
    l1_inputs,
    l1_state_of,
    l1_state_to,
    stack_l1_inputs,
    stack_l1_states,
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
    "L1Gains",
    "L1Inputs",
    "L1State",
    "SCHEDULE_KINDS",
    "KSchedule",
    "SparsityScheduleCallback",
    "k_schedule",
    "schedule_end_epoch",
    "l1_advance",
    "l1_control_step",
    "l1_initial_state",
    "l1_inputs",
    "l1_state_of",
    "l1_state_to",
    "stack_l1_inputs",
    "stack_l1_states",
    "total_epochs",
    "validate_schedule",
]
