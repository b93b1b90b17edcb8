"""A pack's optimizer update: every member's torch.optim step at once, each with its own coefficients."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from search.engine.config import TrainConfig
from search.engine.trainer import make_optimizer, make_schedule


class ScheduleValues:
    """One config's learning rate and beta1 (Adam) or momentum (SGD), step by step, as torch gives them.

    Read off a real optimizer and schedule (trainer.make_optimizer, make_schedule) stepped over a dummy
    parameter, so every schedule, one-cycle's cycled beta1 or momentum included, is torch's own; an
    epoch's worth at a time, so a long run holds no table of all its steps."""

    def __init__(self, config: TrainConfig, total_steps: int):
        self.optimizer = make_optimizer([nn.Parameter(torch.zeros(1))], config)
        self.group = self.optimizer.param_groups[0]
        self.schedule = make_schedule(self.optimizer, config, total_steps)
        self.optimizer.step()  # no gradient, so no change; a schedule warns if it steps before its optimizer has
        self.taken: tuple[list[float], list[float]] = ([], [])
        self.at = -1  # the step of `taken`'s first values

    def first_value(self) -> float:
        """beta1 or momentum, as the group holds it now."""
        return self.group["betas"][0] if "betas" in self.group else self.group["momentum"]

    def take(self, start: int, count: int) -> tuple[list[float], list[float]]:
        """The values of steps start .. start + count - 1, counted from 0; steps come in order."""
        if self.at != start:  # members sharing a config share this, and ask for each epoch once each
            rates, firsts = [], []
            for _ in range(count):
                rates.append(self.group["lr"])
                firsts.append(self.first_value())
                if self.schedule is not None:
                    self.schedule.step()
            self.taken, self.at = (rates, firsts), start
        return self.taken


def kernel_per_member_group(device: torch.device) -> bool:
    """Whether Adam's update runs torch's fused kernel once per group of members with the same values.

    On a CPU that is one pass over the parameters (weight decay and the step included) for a call's small
    cost, against three or more passes of one update for the whole pack; on a GPU each call is a launch,
    and a pack of hundreds of members with their own learning rates would make hundreds per step."""
    return device.type == "cpu"


@dataclass(frozen=True)
class KernelGroup:
    """Members whose Adam steps this epoch take the same learning rates, beta1 values and weight decay: their
    values step by step, and their rows of the parameters, gradients, moments and step counts."""

    rows: tuple[int, ...]
    rates: tuple[float, ...]
    firsts: tuple[float, ...]
    decay: float
    tensors: list[list[torch.Tensor]]


class PackUpdate:
    """Pack's update (mixed into Pack): its coefficients' table, and Adam's and SGD's steps."""

    def start_update(self) -> None:
        """The constants the members' updates share, checked, and the schedules still in use."""
        self.schedules = {key: values for key, values in self.schedules.items() if any(
            m.schedule is values for m in self.members)}  # fmt: skip
        groups = [values.group for values in self.schedules.values()]
        if any(group.get("nesterov") or group.get("dampening") for group in groups):
            raise ValueError("a pack's SGD has neither Nesterov momentum nor dampening")
        constants = {(group.get("betas", (0, 0))[1], group.get("eps")) for group in groups}
        if len(constants) > 1:
            raise ValueError(f"the members of a pack share beta2 and eps; got {sorted(constants)}")
        self.beta2, self.eps = constants.pop()
        # SGD with momentum 0 throughout keeps no buffer, as torch's (one-cycle turns momentum on from the start)
        self.uses_momentum = self.optimizer != "sgd" or any(v.first_value() for v in self.schedules.values())
        self.table = self.param.new_empty((0,))
        self.fused_betas: list[float] | None = None

    def load_coefficients(self, count: int) -> None:
        """The update's per-member coefficients for the next `count` steps, as a (steps, columns, K, 1) table.

        Computed in float64 from the values torch's optimizer would use at each of the member's own steps
        (ScheduleValues); a step then reads its row, with no host work per member. Where this torch has the
        fused Adam kernel (search/engine/fused.py checks it), a CPU pack's Adam steps are that kernel's, called
        once per group of members with the same values (KernelGroup), so each member's update is torch's own;
        elsewhere Adam's moments go through the kernel in epochs where every member has the same beta1 at
        every step (all but packs mixing one-cycle with other schedules, or one-cycle members that joined at
        other epochs)."""
        # Members that joined together with one config share their values (ScheduleValues.take): taken once.
        unique: dict[tuple[int, int], int] = {}
        taken: list[tuple[list[float], list[float]]] = []
        which = []
        for member in self.members:
            key = (id(member.schedule), member.steps)
            if key not in unique:
                unique[key] = len(taken)
                taken.append(member.schedule.take(member.steps, count))
            which.append(unique[key])
        index = torch.tensor(which)
        rates = torch.tensor([values[0] for values in taken], dtype=torch.float64)[index]  # (K, steps)
        firsts = torch.tensor([values[1] for values in taken], dtype=torch.float64)[index]
        decay = torch.tensor([m.config.weight_decay for m in self.members], dtype=torch.float64).unsqueeze(1)
        if self.optimizer == "sgd":
            columns = [-rates, firsts, decay.expand_as(rates)]
        else:
            started = torch.tensor([m.steps for m in self.members], dtype=torch.float64).unsqueeze(1)
            steps = started + torch.arange(1, count + 1, dtype=torch.float64)  # each member's own step numbers
            columns = [
                1 - firsts,
                torch.sqrt(1 - torch.pow(self.beta2, steps)),
                -rates / (1 - torch.pow(firsts, steps)),
                1 - rates * decay if self.optimizer == "adamw" else decay.expand_as(rates),
                -rates,
            ]
        table = torch.stack(columns).permute(2, 0, 1).unsqueeze(3)  # (steps, columns, K, 1)
        self.table = table.to(device=self.device, dtype=self.param.dtype).contiguous()
        rates_by_member = [taken[k][0] for k in which]
        firsts_by_member = [taken[k][1] for k in which]
        self.step_index = 0
        shared = all(values[1] == taken[0][1] for values in taken)
        self.fused_betas = firsts_by_member[0] if self.fused_kernel and shared else None
        # the fused kernel's steps, floats as Adam keeps them, one per member
        self.step_counts = torch.tensor([float(m.steps) for m in self.members], device=self.device)
        # one step tensor for the whole pack while its members are in step (the fused kernel then makes one
        # pass over it), else one per member's row
        self.in_step = len({m.steps for m in self.members}) == 1
        if self.group_kernel is not None:
            self.kernel_groups = self.member_groups(rates_by_member, firsts_by_member)

    def member_groups(
        self, rates_by_member: list[list[float]], firsts_by_member: list[list[float]]
    ) -> list[KernelGroup]:
        """The members grouped by the learning rates, beta1 values and weight decay of their next steps, each
        group's rows as the lists of tensors torch's fused Adam kernel takes."""
        rows_by_values: dict[tuple, list[int]] = {}
        values = zip(self.members, rates_by_member, firsts_by_member, strict=True)
        for row, (member, rates, firsts) in enumerate(values):
            rows_by_values.setdefault((tuple(rates), tuple(firsts), member.config.weight_decay), []).append(row)
        exp_avg, exp_avg_sq = self.state
        return [
            KernelGroup(
                tuple(rows),
                rates,
                firsts,
                decay,
                [[tensor[row] for row in rows] for tensor in (self.param, self.grad, exp_avg, exp_avg_sq)]
                + [[], [self.step_counts[row] for row in rows]],
            )
            for (rates, firsts, decay), rows in rows_by_values.items()
        ]

    def coefficients(self) -> tuple[torch.Tensor, ...]:
        """This step's row of the table, or of a captured step's own copy: one (K, 1) column per coefficient."""
        row = self.table[self.step_index] if self.graph is None else self.graph.coefficients
        return row.unbind(0)

    def adam_update(self) -> None:
        """torch.optim.Adam's or AdamW's update for every member at once, each row with its own coefficients.

        p, g, m, v: parameters, gradients, first and second moments; t: the step; lr and beta1: this
        step's. Adam first adds decay * p to g, AdamW multiplies p by 1 - lr * decay. Then
            m = lerp(m, g, 1 - beta1)        v = beta2 v + (1 - beta2) g^2
            p -= lr * d,    d = m / (1 - beta1^t) / (sqrt(v) / sqrt(1 - beta2^t) + eps)
        On a CPU (kernel_groups) this is torch's fused kernel itself, once per group of members with the
        same values. Elsewhere, where the members share beta1, the kernel computes m, v and d in one pass
        over the whole pack: the update it makes with a learning rate of -1 to a tensor of zeros is d. Else
        it takes six passes of elementwise ops, each member's coefficients a (K, 1) column; either way each
        member then takes its own learning rate's step along d.
        """
        beta2, eps = self.beta2, self.eps
        if self.kernel_groups is not None:
            self.step_counts += 1
            for group in self.kernel_groups:
                self.group_kernel(
                    *group.tensors,
                    amsgrad=False,
                    lr=group.rates[self.step_index],
                    beta1=group.firsts[self.step_index],
                    beta2=beta2,
                    weight_decay=group.decay,
                    eps=eps,
                    maximize=False,
                    grad_scale=None,
                    found_inf=None,
                )
            return
        exp_avg_weight, bias2_root, minus_step, decay, minus_lr = self.coefficients()
        param, grad, direction = self.param, self.grad, self.scratch
        exp_avg, exp_avg_sq = self.state
        if self.uses_decay:
            if self.optimizer == "adamw":
                param.mul_(decay)
            else:
                grad.addcmul_(param, decay)
        if self.fused_betas is not None:
            direction.zero_()
            self.step_counts += 1
            if self.in_step:
                tensors = [[direction], [grad], [exp_avg], [exp_avg_sq], [], [self.step_counts[0]]]
            else:
                tensors = [list(t.unbind()) for t in (direction, grad, exp_avg, exp_avg_sq)]
                tensors += [[], list(self.step_counts.unbind())]
            torch._fused_adam_(
                *tensors,
                amsgrad=False,
                lr=-1.0,
                beta1=self.fused_betas[self.step_index],
                beta2=beta2,
                weight_decay=0.0,
                eps=eps,
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )
            param.addcmul_(direction, minus_lr)
            return
        exp_avg.lerp_(grad, exp_avg_weight)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        torch.sqrt(exp_avg_sq, out=direction).div_(bias2_root).add_(eps)
        torch.div(exp_avg, direction, out=direction)
        param.addcmul_(direction, minus_step)

    def sgd_update(self) -> None:
        """torch.optim.SGD's update (without dampening or Nesterov momentum) for every member at once.

        g += decay * p; the momentum buffer b starts as g, then b = momentum * b + g; p -= lr * b."""
        minus_lr, momentum, decay = self.coefficients()
        param, grad = self.param, self.grad
        if self.uses_decay:
            grad.addcmul_(param, decay)
        if not self.uses_momentum:
            param.addcmul_(grad, minus_lr)
            return
        (buffer,) = self.state  # zero until a member's first step, where b = g + momentum * 0 = g, as torch starts it
        torch.addcmul(grad, buffer, momentum, out=buffer)
        param.addcmul_(buffer, minus_lr)


# Measuring stops at the first doubling that makes a member's step less than this much cheaper, and the
# smallest pack within NEAR_FASTEST of the fastest measured is taken: a trial in a pack waits for the pack,
