"""The vectorised step of a pack: N members' networks as one stacked network.

The members' parameters and buffers are stacked along a new leading axis
(``torch.func.stack_module_state``) and the single engine's ``VAESAE`` runs over them with
``vmap(functional_call)``, so the forward and the backward of all members are one batched
computation; the pack loss is the sum of the members' losses, so each member's gradient is its
own. One Adam over the stacked parameters is N Adams, element for element.

Two things cannot be per-member Python values inside ``vmap``, so they become tensors:

- k: :class:`RankTopK` keeps a unit when its rank among the sample's pre-activations is below
  the member's k (a device tensor), which equals Top-k + scatter except among pre-activations
  tied at the k-th rank (here the lower unit index wins). An L1 member is a Top-k member with
  k = width: ReLU.
- the posterior noise: drawn per member before the forward, from a generator that holds the
  member's own torch generator for the epoch, in the same order and dtype as the single run
  draws it.

Around the step, what each member's own step would do (its batch, its firing window, its L1
controller, its logged means) is done for all stepping members at once, element for element, and
handed back to them at the epoch's end (:class:`StackedStep`). What its schedule hook would
compute on the host before each step (k, the controller's inputs) and its noise are tabulated
for the whole epoch at its start, so a step only reads rows of device tables.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap

from vaesae.metrics import advance_since_fired
from vaesae.models import VAESAE, VAESAEOutput, l1_norm, vae_sae_loss
from vaesae.models.activations import SparseActivation
from vaesae.module import step_figures
from vaesae.pack.member import StackedMeans
from vaesae.sparsity import (
    L1_STACKED_FIELDS,
    L1State,
    l1_advance,
    l1_input_columns,
    l1_inputs_of_columns,
    l1_state_of,
    stack_l1_states,
)
from vaesae.sparsity.callback import SparsityScheduleCallback, step_logs

if TYPE_CHECKING:
    from vaesae.pack.member import Member

__all__ = ["RankTopK", "StackedModels", "StackedStep", "evaluate_stacked", "rank_topk"]

log = logging.getLogger("vaesae")

# Eager steps at an epoch's start before a captured pack captures its step (`StackedStep`).
CAPTURE_WARMUP = 3
# Images per batched evaluation forward, summed over the members: bounds the stacked
# activations (the decoder's largest is 64 channels x 32 x 32 floats per image, 256 KiB).
EVAL_IMAGES_PER_FORWARD = 4096


def rank_topk(pre: Tensor, k: Tensor) -> Tensor:
    """s = ReLU(pre) on the units whose rank r (0 = largest pre-activation of the sample, ties to
    the lower index) satisfies r < k, 0 elsewhere; ``k`` a 0-d integer tensor, 1 <= k <= width.
    The gradient reaches the kept units only, as with Top-k."""
    order = pre.argsort(dim=-1, descending=True, stable=True)
    positions = torch.arange(pre.shape[-1], device=pre.device).expand_as(order)
    rank = torch.zeros_like(order).scatter(-1, order, positions)
    return torch.relu(pre) * (rank < k)


class RankTopK(SparseActivation):
    """Top-k whose k is a buffer (0-d long), so a stacked network holds one k per member and a
    falling k changes a tensor's value, never the program. Not registered: packs only."""

    method = "topk"
    control = "k"
    k: Tensor

    def __init__(self, width: int) -> None:
        super().__init__(width)
        self.register_buffer("k", torch.tensor(width), persistent=False)

    def forward(self, pre: Tensor) -> Tensor:
        return rank_topk(pre, self.k)


class StackedModels:
    """N ``VAESAE`` of one architecture as stacked parameters and buffers, plus a weightless
    template that ``functional_call`` runs over one member's slice."""

    def __init__(self, models: list[VAESAE]) -> None:
        self.params, self.buffers = stack_module_state(models)  # pyright: ignore[reportArgumentType]
        template = copy.deepcopy(models[0]).to("meta")
        template.sae.activation = RankTopK(models[0].sae.width)
        self.template = template
        device = next(iter(self.params.values())).device
        self.buffers["sae.activation.k"] = torch.full(
            (len(models),), models[0].sae.width, dtype=torch.long, device=device
        )

    def forward_losses(
        self,
        x: Tensor,
        eps: Tensor,
        k: Tensor,
        coef: Tensor,
        beta: Tensor,
        alpha: Tensor,
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Per-member loss terms (each (N,)) and codes (N, B, width) of images x (N, B, C, H,
        W) with noise eps (N, B, d_z), k (N,), lambda, beta and alpha (N,)."""
        self.set_k(k)
        self.template.train()

        def member(params, buffers, xi, ei, ci, bi, ai):
            out = functional_call(self.template, (params, buffers), (xi,), {"eps": ei})
            terms = vae_sae_loss(out, xi, bi, ai, ci, l1_norm(out.codes))
            return {**terms, **step_figures(terms, out)}, out.codes

        fn = vmap(member, randomness="error")
        return fn(self.params, self.buffers, x, eps, coef, beta, alpha)

    def set_k(self, k: Tensor) -> None:
        """Each member's Top-k k (N,) for the next forward (width: ReLU)."""
        self.buffers["sae.activation.k"].copy_(k)

    @torch.no_grad()
    def eval_outputs(self, x: Tensor) -> VAESAEOutput:
        """Every member's eval-mode output of the same images x (B, C, H, W), each field with
        a leading member axis (N, ...)."""
        self.template.eval()

        def member(params, buffers):
            return functional_call(self.template, (params, buffers), (x,))

        return vmap(member, randomness="error")(self.params, self.buffers)

    def copy_to(self, i: int, model: VAESAE) -> None:
        """Write member ``i``'s slice into ``model`` (its parameters and buffers)."""
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(self.params[name][i])
            for name, b in model.named_buffers():
                b.copy_(self.buffers[name][i])

    def renormalize_decoders_(self) -> None:
        """Each member's dictionary columns to unit L2 norm (``normalize_decoder_``, stacked)."""
        w = self.params["sae.decoder.weight"]
        with torch.no_grad():
            w.div_(w.norm(dim=1, keepdim=True).clamp_min(1e-12))


class CapturedStep(NamedTuple):
    """A stacked step's device part captured in a CUDA graph, its output buffers (refilled at
    each replay) and the epoch means' host counts one step adds."""

    graph: torch.cuda.CUDAGraph
    figures: dict[str, Tensor]
    images: Tensor
    factors: Tensor
    counts: dict[str, float]


class StackedStep:
    """Steps the members of a pack through one :class:`StackedModels` and one Adam.

    At an epoch's start the stack is built from the unfinished members' modules and optimizers
    (:meth:`sync_from_members`); at its end the members that stepped get their slice back
    (:meth:`sync_to_members`), so their own epoch-end code (evaluation, checkpoint) and a resume
    see exactly what a run alone would hold. A member that does not step this epoch (frozen
    after a failure, or ahead of the others after a resume) rides along: it keeps its place in
    the stack, so the others' batched kernels see the same shapes as in an uninterrupted pack,
    but its loss is left out of the sum and its slice is never written back.

    ``capture`` (CUDA only): :meth:`epoch` takes its first ``CAPTURE_WARMUP`` steps eagerly, on
    a side stream, then captures the device part of one step in a CUDA graph and replays it for
    the rest of the epoch, with the members' host bookkeeping after each replay. Adam runs with
    ``capturable=True`` (its step count on the device), so the packed runs equal the eager pack
    to a tolerance, not bitwise.
    """

    def __init__(self, members: list[Member], capture: bool = False) -> None:
        self.members = members
        self.capture = capture
        self.stack: StackedModels | None = None
        self.optimizer: torch.optim.Adam | None = None
        # The stepping members' (at self.rows) epoch: their factors, generators, λ and loss
        # weights, and their flags, firing windows and logs, stacked over an epoch and handed
        # back at its end (:meth:`_start_epoch`). Their schedule callbacks, and among them the
        # ones that run the L1 controller (at positions self.controlled), whose states are
        # stacked in self.l1 at the epoch's start.
        self.rows: list[int] = []
        self.row_index = self.controlled_at = self.controlled_rows = torch.zeros(0)
        self.schedules: list[SparsityScheduleCallback] = []
        self.controlled: list[int] = []
        self.l1: L1State | None = None
        self.factors: Tensor | None = None
        self.gens: list[torch.Generator] = []
        self.coef: Tensor | None = None
        # The epoch's tables, one row per step (:meth:`_tabulate`).
        self.k_table = self.k_logged = torch.zeros(0)
        # L1Inputs' flags (steps, controlled, 3) and numbers (steps, controlled, 13).
        self.l1_table: tuple[Tensor, Tensor] | None = None
        self.noise: Tensor | None = None
        # The step's place in the epoch on the device (the tables' row), the batch's size and
        # its row offsets.
        self.step_index = self.batch_rows = torch.zeros(0, dtype=torch.long)
        self.batch_size = 0
        self.beta = self.alpha = self.stepping = torch.zeros(0)
        self.nonfinite: Tensor | None = None
        self.window: Tensor | None = None
        self.means = StackedMeans()

    def sync_from_members(self, members: list[Member], stepping: list[Member]) -> None:
        """Stack ``members`` (all unfinished ones); Adam's step count is that of ``stepping``."""
        steps = {m.trainer.global_step for m in stepping}
        if len(steps) != 1:
            raise RuntimeError(f"stepping members must be at one step, got {sorted(steps)}")
        lr = {float(m.module.hparams["lr"]) for m in members}
        if len(lr) != 1:
            raise RuntimeError(f"stacked members share one Adam and so one lr, got {sorted(lr)}")
        self.members = members
        self.rows = []  # the next step starts the epoch (:meth:`_start_epoch`)
        self.stack = StackedModels([m.module.model for m in members])
        names = [n for n, _ in members[0].module.model.named_parameters()]
        self.optimizer = torch.optim.Adam(
            [self.stack.params[n] for n in names], lr=lr.pop(), capturable=self.capture
        )
        device = members[0].device
        states = [m.optimizer.state_dict()["state"] for m in members]
        reference = states[members.index(stepping[0])]
        if reference:
            for idx, name in enumerate(names):
                like = self.stack.params[name]
                self.optimizer.state[like] = {
                    # A capturable Adam keeps its step count on the device.
                    "step": reference[idx]["step"].to(device if self.capture else "cpu").clone(),
                    "exp_avg": torch.stack([_moment(s, idx, "exp_avg", like) for s in states]),
                    "exp_avg_sq": torch.stack(
                        [_moment(s, idx, "exp_avg_sq", like) for s in states]
                    ),
                }

    def sync_to_members(self, members: list[Member]) -> None:
        """Give each of ``members`` that is still running its slice and its Adam state, and each
        member that stepped its epoch's flags, firing window and logs."""
        assert self.stack is not None and self.optimizer is not None
        if self.window is not None and self.nonfinite is not None:
            stepped = [self.members[i] for i in self.rows]
            self._finish_schedules(stepped)
            for j, m in enumerate(stepped):
                m.nonfinite |= self.nonfinite[j]
                m.module.window.samples_since_fired.copy_(self.window[j])
                _hand_back_generator(m, self.gens[j])
            self.means.hand_over([m.logs for m in stepped])
            self.window, self.nonfinite, self.rows = None, None, []
        names = [n for n, _ in self.members[0].module.model.named_parameters()]
        for i, m in enumerate(self.members):
            if m not in members or m.status != "running":
                continue
            self.stack.copy_to(i, m.module.model)
            params = list(m.module.model.parameters())
            for idx, name in enumerate(names):
                state = self.optimizer.state.get(self.stack.params[name])
                if state:
                    m.optimizer.state[params[idx]] = {
                        "step": state["step"].to("cpu").clone(),  # as a run's own Adam keeps it
                        "exp_avg": state["exp_avg"][i].clone(),
                        "exp_avg_sq": state["exp_avg_sq"][i].clone(),
                    }

    def epoch(self, running: list[Member], steps: int) -> None:
        """The ``running`` members' ``steps`` steps of the epoch: eagerly, or under ``capture``
        replayed from a CUDA graph after ``CAPTURE_WARMUP`` eager steps (class docstring)."""
        if not self.capture or steps <= CAPTURE_WARMUP:
            for b in range(steps):
                self.step(running, b)
            return
        self.warm_up(running)
        try:
            captured = self.capture_step()
        except RuntimeError as err:
            # Capturing records kernels without running them, so nothing has moved on: the
            # pack goes on eagerly, this epoch and the next.
            log.warning("capture of the stacked step failed, stepping eagerly: %s", err)
            self.capture = False
            for b in range(CAPTURE_WARMUP, steps):
                self.step(running, b)
            return
        for b in range(CAPTURE_WARMUP, steps):
            self.replay(captured, b)

    def warm_up(self, running: list[Member]) -> None:
        """The epoch's first ``CAPTURE_WARMUP`` steps, eagerly on a side stream (what precedes
        a capture: the epoch's tables, Adam's state, cuBLAS and cuDNN workspaces)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for b in range(CAPTURE_WARMUP):
                self.step(running, b)
        torch.cuda.current_stream().wait_stream(side)

    def capture_step(self) -> CapturedStep:
        """The device part of the epoch's next step captured in a CUDA graph (not run)."""
        counts = dict(self.means.counts)
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: an epoch end measuring on the worker thread (``overlap``) may
            # allocate and synchronise its own stream while this thread captures.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                figures, images, factors = self._device_step(self.rows)
            # Capturing ran the step's Python once and its kernels not at all: the epoch
            # means' host counts move on at each replay instead.
            per_step = {k: n - counts.get(k, 0.0) for k, n in self.means.counts.items()}
        finally:
            self.means.counts = counts
        return CapturedStep(graph, figures, images, factors, per_step)

    def replay(self, captured: CapturedStep, batch_idx: int) -> None:
        """Step ``batch_idx`` of the epoch: the captured kernels, then the host part."""
        captured.graph.replay()
        for k, n in captured.counts.items():
            self.means.counts[k] = self.means.counts.get(k, 0.0) + n
        self._finish_members(
            self.rows, captured.figures, captured.images, captured.factors, batch_idx
        )

    def step(self, running: list[Member], batch_idx: int) -> None:
        """One training step of the ``running`` members; the rest of the stack rides along."""
        stepped = [i for i, m in enumerate(self.members) if m in running]
        if self.rows != stepped:
            self._start_epoch(stepped)
        self._finish_members(stepped, *self._device_step(stepped), batch_idx)

    def _device_step(self, stepped: list[int]) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """The device part of a step (what a CUDA graph captures): the batch, the forward and
        backward, Adam, the dictionary's renormalisation and the stacked bookkeeping. What
        changes from step to step (the batch's rows, k, the controller's inputs, the logged k,
        the noise) is read from the epoch's tables at the device step counter, and every state
        is updated in place: no host value enters (but a file's images are gathered in host
        memory). Returns the figures, images and factors."""
        assert self.stack is not None and self.optimizer is not None
        assert self.factors is not None and self.noise is not None and self.coef is not None
        members = self.members
        at = self.step_index.view(1)
        factors = self.factors.index_select(1, at * self.batch_size + self.batch_rows)
        # One gather and one conversion for every stepping member (a member's batch is the rows
        # its own gather would give: the data module is the pack's, its dataset the same); the
        # epoch's factors were checked at its start.
        first = members[stepped[0]]
        images = first.parts.datamodule.images(factors.flatten(0, 1), check=False)
        images = images.unflatten(0, factors.shape[:2])
        x = first.module.to_input(images.flatten(0, 1)).contiguous().unflatten(0, images.shape[:2])
        n = len(members)
        with members[0].autocast():
            figures, codes = self.stack.forward_losses(
                _all_rows(x, self.row_index, n),
                _all_rows(self.noise.index_select(0, at).squeeze(0), self.row_index, n),
                self.k_table.index_select(0, at).squeeze(0),
                _all_rows(self.coef, self.row_index, n),
                self.beta,
                self.alpha,
            )
        loss = torch.where(self.stepping, figures["loss"], 0.0).sum()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if members[0].module.model.sae.normalize_decoder:
            self.stack.renormalize_decoders_()
        self._bookkeep(figures, codes, at)
        self.step_index += 1
        return figures, images, factors

    def _finish_members(
        self,
        stepped: list[int],
        figures: dict[str, Tensor],
        images: Tensor,
        factors: Tensor,
        batch_idx: int,
    ) -> None:
        """The host part of a step: each stepped member's step counter and after-step hooks."""
        for j, i in enumerate(stepped):
            out = {"loss": figures["loss"][i].detach(), "l0": figures["l0"][i]}
            batch = (images[j], factors[j])
            self.members[i].finish_step(out, batch, batch_idx, module_hook=False, stacked=True)

    def _start_epoch(self, stepped: list[int]) -> None:
        """An epoch's first step: its stepping members (fixed until its end), their epoch's
        factors, their torch generators (held for the epoch, handed back at its end), λ, the
        loss weights, the stacked flags, windows and logs, and the epoch's tables.

        The tables hold, for every step of the epoch, what each member's own step would compute
        on the host before it: k (N members, riding ones at width), the logged k, the L1
        controller's inputs (`SparsityScheduleCallback.inputs_at`, as bool and float32 columns:
        `l1_input_columns`) and the posterior noise, drawn now from each member's generator in
        the order and shapes of its own steps (its only draws), so the values are its own."""
        members = [self.members[i] for i in stepped]
        device = members[0].device
        self.rows = stepped
        self.row_index = torch.tensor(stepped, device=device)
        self.schedules = [m.schedule for m in members]
        for m, cb in zip(members, self.schedules, strict=True):
            _check_batch_start_hooks(m, cb)
            # The first step's own hook: k, the controller's state on the device, λ.
            cb.on_train_batch_start(m.hook_trainer, m.module, None, 0)
        self.controlled = [
            j
            for j, (m, cb) in enumerate(zip(members, self.schedules, strict=True))
            if cb.controls(m.module)
        ]
        self.controlled_at = torch.tensor(self.controlled, device=device)
        self.controlled_rows = torch.tensor([stepped[j] for j in self.controlled], device=device)
        self.means = StackedMeans()
        self.factors = torch.stack([m.factors for m in members])
        # Checked once here, so a step's gather has no host synchronisation.
        members[0].parts.datamodule.dataset.space.check_factors(self.factors.flatten(0, 1))
        self.batch_size = members[0].parts.datamodule.batch_size
        self.batch_rows = torch.arange(self.batch_size, device=device)
        self.step_index = torch.zeros((), dtype=torch.long, device=device)
        self.gens = [_torch_generator(m, device) for m in members]
        self.coef = torch.stack(
            [torch.as_tensor(m.module.l1_coef, dtype=torch.float32, device=device) for m in members]
        )
        hp = [m.module.hparams for m in self.members]
        self.beta = torch.tensor([float(h["beta"]) for h in hp], device=device)
        self.alpha = torch.tensor([float(h["alpha"]) for h in hp], device=device)
        self.stepping = torch.tensor(
            [i in stepped for i in range(len(self.members))], device=device
        )
        self.window = torch.stack([m.module.window.samples_since_fired for m in members])
        self.nonfinite = torch.zeros(len(stepped), dtype=torch.bool, device=device)
        self._tabulate(members, device)

    def _tabulate(self, members: list[Member], device: torch.device) -> None:
        """The epoch's tables (:meth:`_start_epoch`) and the controllers' stacked state."""
        steps = members[0].trainer.num_training_batches
        width = members[0].module.model.sae.width
        targets = [
            [cb.step_targets(m.hook_trainer, b, width) for b in range(steps)]
            for m, cb in zip(members, self.schedules, strict=True)
        ]
        # A member's Top-k keeps its k; a rule without k (L1) keeps every unit: width.
        k = torch.full((steps, len(self.members)), width, dtype=torch.long)
        for i, m, ts in zip(self.rows, members, targets, strict=True):
            if m.module.model.sae.activation.control == "k":
                k[:, i] = torch.tensor([t.k for t in ts])
        self.k_table = k.to(device)
        self.k_logged = torch.tensor(
            [[float(t.k) for t in ts] for ts in targets], dtype=torch.float32
        ).T.to(device)
        self.l1 = None
        self.l1_table = None
        if self.controlled:
            inputs = []
            k_prev = [self.schedules[j].l1.k_prev for j in self.controlled]
            for b in range(steps):
                for c, j in enumerate(self.controlled):
                    inputs.append(self.schedules[j].inputs_at(k_prev[c], targets[j][b]))
                    k_prev[c] = float(targets[j][b].k_tracked)
            flags, numbers = l1_input_columns(inputs, device)
            shape = (steps, len(self.controlled), -1)
            self.l1_table = (flags.reshape(shape), numbers.reshape(shape))
            self.l1 = stack_l1_states([self.schedules[j].l1 for j in self.controlled])
        bf16 = members[0].parts.plan.precision == "bf16-mixed"
        d_z = members[0].module.hparams["d_z"]
        self.noise = torch.stack(
            [
                torch.stack(
                    [
                        _noise(self.batch_size, d_z, torch.bfloat16 if bf16 else None, device, gen)
                        for _ in range(steps)
                    ]
                )
                for gen in self.gens
            ],
            dim=1,
        )

    def _bookkeep(self, figures: dict[str, Tensor], codes: Tensor, at: Tensor) -> None:
        """What each stepped member's own step does after the optimizer, for all of them at once,
        element for element as they would: the finiteness flag, the firing window, the L1
        controller (λ for the next step), and the logged figures (the step's, then k, L0 and
        λ). ``at`` (1,) is the step's row of the epoch's tables. Every stacked state is updated
        in place, so a captured step's replays carry it from step to step. The members get them
        back at the epoch's end (:meth:`sync_to_members`)."""
        assert self.window is not None and self.nonfinite is not None and self.coef is not None

        def pick(t: Tensor) -> Tensor:
            return t.detach().index_select(0, self.row_index)

        self.nonfinite |= ~torch.isfinite(pick(figures["loss"]))
        self.window.copy_(advance_since_fired(self.window, pick(codes)))
        batch = codes.shape[1]
        for name, value in figures.items():
            if "/" in name:
                self.means.log(name, pick(value), batch)
        if self.l1 is not None and self.l1_table is not None:
            # Two gathers for the step's row; its fields are views of them.
            inputs = l1_inputs_of_columns(
                *(t.index_select(0, at).squeeze(0) for t in self.l1_table)
            )
            l0 = figures["l0"].detach().index_select(0, self.controlled_rows)
            advanced = l1_advance(self.l1, l0, inputs)
            for name in L1_STACKED_FIELDS:
                cast(Tensor, getattr(self.l1, name)).copy_(getattr(advanced, name))
            self.coef.index_copy_(0, self.controlled_at, cast(Tensor, self.l1.coef))
        k = self.k_logged.index_select(0, at).squeeze(0)
        for name, value in step_logs(k, pick(figures["l0"]), self.coef).items():
            self.means.log(name, value)

    def _finish_schedules(self, stepped: list[Member]) -> None:
        """Each stepped member's schedule callback as its own last step of the epoch leaves it
        (its targets, its activation's k, its controller state and λ), for its epoch-end hooks
        and its checkpoint."""
        steps = stepped[0].trainer.num_training_batches
        for m, cb in zip(stepped, self.schedules, strict=True):
            cb.on_train_batch_start(m.hook_trainer, m.module, None, steps - 1)
        if self.l1 is not None:
            for c, j in enumerate(self.controlled):
                cb = self.schedules[j]
                cb.l1 = l1_state_of(self.l1, c, float(cb.k_tracked))
                stepped[j].module.l1_coef = cb.l1.coef


def _check_batch_start_hooks(member: Member, schedule: SparsityScheduleCallback) -> None:
    """Raise when a callback of ``member`` other than its schedule acts before each step: the
    stacked step runs none of them (what the schedule does there is in the epoch's tables)."""
    for cb in member.callbacks:
        own = type(cb).on_train_batch_start is not pl.Callback.on_train_batch_start
        if own and cb is not schedule:
            raise RuntimeError(
                f"{type(cb).__name__} acts before each step, which a stacked step does not run;"
                " train this member in mode=loop"
            )


def _moment(state: dict, idx: int, key: str, like: Tensor) -> Tensor:
    """A member's Adam moment of parameter ``idx``, zeros when it has taken no step yet."""
    if idx in state:
        return state[idx][key]
    return torch.zeros_like(like[0])


def _noise(
    batch: int, d_z: int, dtype: torch.dtype | None, device: Any, generator: torch.Generator
) -> Tensor:
    """The posterior noise eps (batch, d_z) as ``randn_like(mu)`` draws it in a run alone (mu is
    bf16 under bf16 autocast), from the member's own ``generator``."""
    return torch.randn((batch, d_z), dtype=dtype, device=device, generator=generator)


def _torch_generator(member: Member, device: torch.device) -> torch.Generator:
    """A generator on ``device`` in the state of the member's own torch generator for it (what
    its global generator would hold inside `Member.scope`): the same draws."""
    gen = torch.Generator(device=device)
    if device.type == "cuda":
        gen.set_state(member.generators.torch_cuda[device.index or 0])
    else:
        gen.set_state(member.generators.torch_cpu)
    return gen


def _hand_back_generator(member: Member, gen: torch.Generator) -> None:
    """The member's torch generator state after the epoch's draws from ``gen``."""
    if gen.device.type == "cuda":
        member.generators.torch_cuda[gen.device.index or 0] = gen.get_state()
    else:
        member.generators.torch_cpu = gen.get_state()


def _all_rows(stepping: Tensor, rows: Tensor, n: int) -> Tensor:
    """A stack of ``n`` members' rows from the stepping members' (at ``rows``, a device index
    tensor); the others (riding along) get zeros."""
    if len(rows) == n:
        return stepping
    return stepping.new_zeros((n, *stepping.shape[1:])).index_copy(0, rows, stepping)


def member_k(member: Member) -> int:
    """The k a member's Top-k keeps now (its width for a rule without k: ReLU)."""
    activation = member.module.model.sae.activation
    return int(getattr(activation, "k", activation.width))


def evaluate_stacked(members: list[Member]) -> list[Member]:
    """Run the evaluation set through ``members`` in one batched eval-mode forward and hand each
    member's evaluation callback its outputs (``EvaluationCallback.collected``), so its epoch-end
    hook measures without a pass of its own. Only members that share the first one's
    evaluation set are batched; returns them (the others evaluate alone)."""
    if not members:
        return []
    eval_set = members[0].parts.datamodule.eval_factors
    same = [m for m in members if torch.equal(m.parts.datamodule.eval_factors, eval_set)]
    stack = StackedModels([m.module.model for m in same])
    device = same[0].device
    stack.set_k(torch.tensor([member_k(m) for m in same], device=device))
    collectors = [m.parts.evaluation.collector(m.module) for m in same]
    chunk = max(64, EVAL_IMAGES_PER_FORWARD // len(same))
    to_input = same[0].module.to_input
    for images, factors in same[0].parts.datamodule.eval_batches(device):
        for start in range(0, len(images), chunk):
            x = to_input(images[start : start + chunk])
            with torch.autocast(device.type, enabled=False):
                out = stack.eval_outputs(x)
            for i, collector in enumerate(collectors):
                collector.add(VAESAEOutput(*(t[i] for t in out)), x, factors[start : start + chunk])
    for m, collector in zip(same, collectors, strict=True):
        m.parts.evaluation.collected = collector
    return same
