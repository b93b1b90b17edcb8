"""The optimizers' own fused kernels, called straight, for the fast step's one flat parameter tensor.

Optimizer.step wraps its kernel in per-call Python (profiler hooks, state checks, grouping tensors by device
and dtype, a separate op to count steps) that costs more than the kernel itself for the small MLPs we train
(bench/train_speed.py prints the gain: its (b') line against (c); bench/design_choices.py times one call).
torch has no public entry to the bare kernel, so this calls the private ops that Optimizer.step itself
calls, on the state tensors Optimizer.step made, with the hyperparameters read from the param group on every
call (schedulers change lr, and one-cycle the betas or momentum): the same update, to the bit
(tests/test_fused.py), and the optimizer's state_dict stays true. Private APIs change without notice, so
each is checked before use: the op must exist with the arguments we pass, and the param group must hold
every key we read. Where anything is missing (an older or newer torch) or the optimizer is not one this
module knows, the update is plain Optimizer.step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Update = Callable[[], None]

# What each bare kernel is called with, and what its call reads from the param group.
ADAM_ARGUMENTS = {
    "self", "grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs", "state_steps", "lr", "beta1", "beta2",
    "weight_decay", "eps", "amsgrad", "maximize", "grad_scale", "found_inf",
}  # fmt: skip
SGD_ARGUMENTS = {
    "self", "grads", "momentum_buffer_list", "weight_decay", "momentum", "lr", "dampening", "nesterov", "maximize",
    "is_first_step", "grad_scale", "found_inf",
}  # fmt: skip
ADAM_GROUP_KEYS = (
    "lr",
    "betas",
    "eps",
    "weight_decay",
    "amsgrad",
    "maximize",
    "differentiable",
    "decoupled_weight_decay",
)
SGD_GROUP_KEYS = ("lr", "momentum", "dampening", "nesterov", "weight_decay", "maximize", "differentiable")


def kernel_takes(name: str, arguments: set[str]) -> bool:
    """Whether torch has the private op `name` and its schema names every argument we pass."""
    packet = getattr(getattr(torch.ops, "aten", None), name, None)
    if packet is None or not hasattr(torch, name):
        return False
    try:
        schema_names = {argument.name for argument in packet.default._schema.arguments}
    except (AttributeError, RuntimeError):
        return False
    return arguments <= schema_names


def fused_update(optimizer: torch.optim.Optimizer) -> Update:
    """A callable doing what `optimizer.step()` does, for an optimizer built with fused=True over one tensor."""
    groups = optimizer.param_groups
    if len(groups) != 1 or len(groups[0]["params"]) != 1 or not groups[0].get("fused"):
        return optimizer.step
    group = groups[0]
    if type(optimizer) in (torch.optim.Adam, torch.optim.AdamW):
        if not all(key in group for key in ADAM_GROUP_KEYS):
            return optimizer.step
        if group["amsgrad"] or group["maximize"] or group["differentiable"]:
            return optimizer.step
        kernel = "_fused_adamw_" if group["decoupled_weight_decay"] else "_fused_adam_"
        return _AdamUpdate(optimizer) if kernel_takes(kernel, ADAM_ARGUMENTS) else optimizer.step
    if type(optimizer) is torch.optim.SGD:
        if not all(key in group for key in SGD_GROUP_KEYS) or group["maximize"] or group["differentiable"]:
            return optimizer.step
        return _SGDUpdate(optimizer) if kernel_takes("_fused_sgd_", SGD_ARGUMENTS) else optimizer.step
    return optimizer.step


class _AdamUpdate:
    """torch._fused_adam_ / _fused_adamw_, as torch.optim.adam._fused_adam calls them."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.group = optimizer.param_groups[0]
        self.kernel = torch._fused_adamw_ if self.group["decoupled_weight_decay"] else torch._fused_adam_

    def __call__(self) -> None:
        group = self.group
        (param,) = group["params"]
        state = self.optimizer.state[param]
        if not state:  # the first step makes the state the way Adam makes it
            self.optimizer.step()
            return
        beta1, beta2 = group["betas"]
        state["step"].add_(1)
        self.kernel(
            [param],
            [param.grad],
            [state["exp_avg"]],
            [state["exp_avg_sq"]],
            [],
            [state["step"]],
            amsgrad=False,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )


class _SGDUpdate:
    """torch._fused_sgd_, as torch.optim.sgd._fused_sgd calls it once the momentum buffer exists."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.group = optimizer.param_groups[0]

    def __call__(self) -> None:
        group = self.group
        (param,) = group["params"]
        buffer = self.optimizer.state[param].get("momentum_buffer")
        if group["momentum"] and buffer is None:  # SGD starts the buffer itself
            self.optimizer.step()
            return
        torch._fused_sgd_(
            [param],
            [param.grad],
            [buffer] if group["momentum"] else [],
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            lr=group["lr"],
            dampening=group["dampening"],
            nesterov=group["nesterov"],
            maximize=False,
            is_first_step=False,
            grad_scale=None,
            found_inf=None,
        )
