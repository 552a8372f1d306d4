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
handed back to them at the epoch's end (:class:`StackedStep`).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap

from vaesae.metrics import advance_since_fired
from vaesae.models import VAESAE, VAESAEOutput, l1_norm, vae_sae_loss
from vaesae.models.activations import SparseActivation
from vaesae.module import step_figures
from vaesae.pack.member import StackedMeans
from vaesae.sparsity import (
    L1State,
    l1_advance,
    l1_state_of,
    stack_l1_inputs,
    stack_l1_states,
)
from vaesae.sparsity.callback import SparsityScheduleCallback, step_logs

if TYPE_CHECKING:
    from vaesae.pack.member import Member

__all__ = ["RankTopK", "StackedModels", "StackedStep", "evaluate_stacked", "rank_topk"]

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


class StackedStep:
    """Steps the members of a pack through one :class:`StackedModels` and one Adam.

    At an epoch's start the stack is built from the unfinished members' modules and optimizers
    (:meth:`sync_from_members`); at its end the members that stepped get their slice back
    (:meth:`sync_to_members`), so their own epoch-end code (evaluation, checkpoint) and a resume
    see exactly what a run alone would hold. A member that does not step this epoch (frozen
    after a failure, or ahead of the others after a resume) rides along: it keeps its place in
    the stack, so the others' batched kernels see the same shapes as in an uninterrupted pack,
    but its loss is left out of the sum and its slice is never written back.
    """

    def __init__(self, members: list[Member]) -> None:
        self.members = members
        self.stack: StackedModels | None = None
        self.optimizer: torch.optim.Adam | None = None
        # The stepping members' (at self.rows) epoch: their factors, generators, λ and loss
        # weights, and their flags, firing windows and logs, stacked over an epoch and handed
        # back at its end (:meth:`_start_epoch`). Their schedule callbacks, and among them the
        # ones that run the L1 controller (at positions self.controlled), whose states are
        # stacked in self.l1 at the epoch's first step.
        self.rows: list[int] = []
        self.row_index = self.controlled_at = self.controlled_rows = torch.zeros(0)
        self.schedules: list[SparsityScheduleCallback] = []
        self.controlled: list[int] = []
        self.l1: L1State | None = None
        self.factors: Tensor | None = None
        self.gens: list[torch.Generator] = []
        self.coef: Tensor | None = None
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
        self.optimizer = torch.optim.Adam([self.stack.params[n] for n in names], lr=lr.pop())
        states = [m.optimizer.state_dict()["state"] for m in members]
        reference = states[members.index(stepping[0])]
        if reference:
            for idx, name in enumerate(names):
                like = self.stack.params[name]
                self.optimizer.state[like] = {
                    "step": reference[idx]["step"].clone(),
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
                        "step": state["step"].clone(),
                        "exp_avg": state["exp_avg"][i].clone(),
                        "exp_avg_sq": state["exp_avg_sq"][i].clone(),
                    }

    def step(self, running: list[Member], batch_idx: int) -> None:
        """One training step of the ``running`` members; the rest of the stack rides along."""
        assert self.stack is not None and self.optimizer is not None
        members = self.members
        stepped = [i for i, m in enumerate(members) if m in running]
        if self.rows != stepped:
            self._start_epoch(stepped)
        assert self.factors is not None
        size = members[stepped[0]].parts.datamodule.batch_size
        factors = self.factors[:, batch_idx * size : (batch_idx + 1) * size]
        # One gather and one conversion for every stepping member (a member's batch is the rows
        # its own gather would give: the data module is the pack's, its dataset the same).
        first = members[stepped[0]]
        images = first.parts.datamodule.images(factors.flatten(0, 1)).unflatten(
            0, factors.shape[:2]
        )
        x = first.module.to_input(images.flatten(0, 1)).contiguous().unflatten(0, images.shape[:2])
        device = x.device
        noise_dtype = torch.bfloat16 if first.parts.plan.precision == "bf16-mixed" else None
        eps = []
        for j, i in enumerate(stepped):
            m, batch = members[i], (images[j], factors[j])
            # The hooks of members that stack draw no random numbers (no remedy, no replacement
            # rule: `vaesae.pack.keys.vmap_blocker`), so only the noise needs their generators.
            for cb in m.callbacks:
                cb.on_train_batch_start(m.hook_trainer, m.module, batch, batch_idx)
            eps.append(_noise(size, m.module.hparams["d_z"], noise_dtype, device, self.gens[j]))
        if self.coef is None:
            # From then on the stack carries each member's λ from step to step (`_bookkeep`).
            self.coef = torch.stack(
                [
                    torch.as_tensor(members[i].module.l1_coef, dtype=torch.float32, device=device)
                    for i in stepped
                ]
            )
        n = len(members)
        width = members[0].module.model.sae.width
        k = torch.tensor([member_k(m) if i in stepped else width for i, m in enumerate(members)])
        with members[0].autocast():
            figures, codes = self.stack.forward_losses(
                _all_rows(x, stepped, n),
                _all_rows(torch.stack(eps), stepped, n),
                k.to(device),
                _all_rows(self.coef, stepped, n),
                self.beta,
                self.alpha,
            )
        loss = torch.where(self.stepping, figures["loss"], 0.0).sum()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if members[0].module.model.sae.normalize_decoder:
            self.stack.renormalize_decoders_()
        self._bookkeep(figures, codes)
        for j, i in enumerate(stepped):
            out = {"loss": figures["loss"][i].detach(), "l0": figures["l0"][i]}
            batch = (images[j], factors[j])
            members[i].finish_step(out, batch, batch_idx, module_hook=False, stacked=True)

    def _start_epoch(self, stepped: list[int]) -> None:
        """An epoch's first step: its stepping members (fixed until its end), their epoch's
        factors, their torch generators (held for the epoch, handed back at its end), λ, the
        loss weights, and the stacked flags, windows and logs."""
        members = [self.members[i] for i in stepped]
        device = members[0].device
        self.rows = stepped
        self.row_index = torch.tensor(stepped, device=device)
        self.schedules = [m.schedule for m in members]
        self.controlled = [
            j
            for j, (m, cb) in enumerate(zip(members, self.schedules, strict=True))
            if cb.controls(m.module)
        ]
        self.controlled_at = torch.tensor(self.controlled, device=device)
        self.controlled_rows = torch.tensor([stepped[j] for j in self.controlled], device=device)
        self.l1 = None  # stacked at the first controller step, after the hooks moved it on device
        self.means = StackedMeans()
        self.factors = torch.stack([m.factors for m in members])
        self.gens = [_torch_generator(m, device) for m in members]
        self.coef = None  # read after the first step's hooks, which set each member's λ
        hp = [m.module.hparams for m in self.members]
        self.beta = torch.tensor([float(h["beta"]) for h in hp], device=device)
        self.alpha = torch.tensor([float(h["alpha"]) for h in hp], device=device)
        self.stepping = torch.tensor(
            [i in stepped for i in range(len(self.members))], device=device
        )
        self.window = torch.stack([m.module.window.samples_since_fired for m in members])
        self.nonfinite = torch.zeros(len(stepped), dtype=torch.bool, device=device)

    def _bookkeep(self, figures: dict[str, Tensor], codes: Tensor) -> None:
        """What each stepped member's own step does after the optimizer, for all of them at once,
        element for element as they would: the finiteness flag, the firing window, the L1
        controller (λ for the next step), and the logged figures (the step's, then k, L0 and
        λ). The members get them back at the epoch's end (:meth:`sync_to_members`)."""
        assert self.window is not None and self.nonfinite is not None and self.coef is not None

        def pick(t: Tensor) -> Tensor:
            return t.detach().index_select(0, self.row_index)

        self.nonfinite |= ~torch.isfinite(pick(figures["loss"]))
        self.window = advance_since_fired(self.window, pick(codes))
        batch = codes.shape[1]
        for name, value in figures.items():
            if "/" in name:
                self.means.log(name, pick(value), batch)
        if self.controlled:
            self._control(figures["l0"])
            assert self.l1 is not None and isinstance(self.l1.coef, Tensor)
            self.coef = self.coef.index_copy(0, self.controlled_at, self.l1.coef)
        k = torch.tensor(
            [float(cb.k) for cb in self.schedules], dtype=torch.float32, device=codes.device
        )
        for name, value in step_logs(k, pick(figures["l0"]), self.coef).items():
            self.means.log(name, value)

    def _control(self, l0: Tensor) -> None:
        """One step of the L1 controllers of the stepping members that run one, as one stack of
        (N,) tensors: bitwise each member's own step (`vaesae.sparsity`), with one set of kernels
        for all. Each member's schedule callback gets its state back as 0-d views (its lambda for
        the next step, and its checkpoint)."""
        schedules = [self.schedules[j] for j in self.controlled]
        if self.l1 is None:
            self.l1 = stack_l1_states([cb.l1 for cb in schedules])
        inputs = stack_l1_inputs([cb.control_inputs() for cb in schedules], l0.device)
        self.l1 = l1_advance(self.l1, l0.detach().index_select(0, self.controlled_rows), inputs)
        for n, (j, cb) in enumerate(zip(self.controlled, schedules, strict=True)):
            cb.l1 = l1_state_of(self.l1, n, float(cb.k_tracked))
            self.members[self.rows[j]].module.l1_coef = cb.l1.coef


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


def _all_rows(stepping: Tensor, rows: list[int], n: int) -> Tensor:
    """A stack of ``n`` members' rows from the stepping members' (at ``rows``); the others
    (riding along) get zeros."""
    if len(rows) == n:
        return stepping
    full = stepping.new_zeros((n, *stepping.shape[1:]))
    return full.index_copy(0, torch.tensor(rows, device=stepping.device), stepping)


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
