"""A pack's step: forward and backward passes of every member at once, batched over K, dropout included."""

from __future__ import annotations

import torch
from torch import nn

from search.engine.trainer import tanh_


def weight_product(grad: torch.Tensor, inputs_t: torch.Tensor, scale: float, out: torch.Tensor) -> None:
    """out = scale * grad @ inputs_t, a layer's weight gradients for the pack: (K, out, B) @ (K, B, in)."""
    if scale == 1.0:
        torch.bmm(grad, inputs_t, out=out)
    else:
        out.baddbmm_(grad, inputs_t, beta=0.0, alpha=scale)


class PackStep:
    """Pack's forward and backward passes (mixed into Pack)."""

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """One step of every member k on its own batch scale * x[k], labels y[k]: their mean losses, (K,),
        detached."""
        loss = self.forward_backward(x, y, scale)
        if self.optimizer == "sgd":
            self.sgd_update()
        else:
            self.adam_update()
        return loss

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """Each member's mean loss, and its gradients in self.grad: MLPStep.forward_backward, batched over K,
        on the inputs scale * x (the first layer's products scale theirs)."""
        count, batch = y.shape
        activation = self.activation
        buffers = self.activation_buffers(batch)
        if self.input_dropout:
            x = self.drop_inputs(x)
        masks = self.dropout_masks(batch) if self.dropout else None
        saved = []  # (layer input as (K, in, B), activation output (input for GELU), mask)
        h_t = x.transpose(1, 2)
        for index, (layer, (z, out, _)) in enumerate(zip(self.layers, buffers, strict=False)):
            torch.baddbmm(layer.bias.unsqueeze(2), layer.weight, h_t, alpha=1.0 if index else scale, out=z)
            layer_input = h_t
            if type(activation) is nn.Tanh:
                h_t = tanh_(z)
            elif type(activation) is nn.ReLU:
                h_t = z.relu_()
            else:
                h_t = torch.ops.aten.gelu.out(z, approximate=activation.approximate, out=out)
            mask = masks[index] if masks else None
            if mask is not None:
                h_t = torch.mul(h_t, mask, out=out)
            saved.append((layer_input, z, mask))
        last = self.layers[-1]
        first_scale = 1.0 if saved else scale  # a linear model's one layer reads the inputs
        logits_t = torch.baddbmm(last.bias.unsqueeze(2), last.weight, h_t, alpha=first_scale)  # (K, classes, B)
        log_probs_t = torch.log_softmax(logits_t, dim=1)
        targets = y.unsqueeze(1)
        loss = log_probs_t.gather(1, targets).sum(dim=2).view(count).div_(-batch)
        grad_t = log_probs_t.exp_()  # d loss / d logits = (softmax - one_hot) / batch
        grad_t.scatter_add_(1, targets, self.minus_one_rows(count, batch))
        grad_t /= batch
        weight_product(grad_t, h_t.transpose(1, 2), first_scale, last.weight_grad)
        torch.sum(grad_t, dim=2, out=last.bias_grad)
        grad = grad_t
        for index in range(len(saved) - 1, -1, -1):
            grad = torch.bmm(self.layers[index + 1].weight.transpose(1, 2), grad, out=buffers[index][2])
            layer_input, z, mask = saved[index]
            if mask is not None:
                grad.mul_(mask)
            if type(activation) is nn.Tanh:
                torch.ops.aten.tanh_backward.grad_input(grad, z, grad_input=grad)
            elif type(activation) is nn.ReLU:
                torch.ops.aten.threshold_backward.grad_input(grad, z, 0, grad_input=grad)
            else:
                torch.ops.aten.gelu_backward.grad_input(grad, z, approximate=activation.approximate, grad_input=grad)
            layer = self.layers[index]
            weight_product(grad, layer_input.transpose(1, 2), 1.0 if index else scale, layer.weight_grad)
            torch.sum(grad, dim=2, out=layer.bias_grad)
        return loss

    def activation_buffers(self, batch: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Each hidden layer's (K, width, B) pre-activation, output and gradient, kept between steps."""
        buffers = self.buffers.get(batch)
        if buffers is None:
            shapes = [(len(self.members), width, batch) for width in self.sizes[1:-1]]
            buffers = [(self.param.new_empty(s), self.param.new_empty(s), self.param.new_empty(s)) for s in shapes]
            self.buffers[batch] = buffers
        return buffers

    def drop_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """x, (K, B, inputs), with each member's input mask applied, drawn as MLPStep draws it alone.

        A member's input mask comes before its hidden masks from its own generator, as alone it comes
        first from the global one; members without input dropout keep ones."""
        batch = x.shape[1]
        if batch not in self.input_masks:
            self.input_masks[batch] = (torch.ones_like(x), torch.empty_like(x))
        mask, dropped = self.input_masks[batch]
        for row, member in enumerate(self.members):
            keep = 1 - member.shape.input_dropout
            if keep < 1:
                mask[row].bernoulli_(keep, generator=member.dropout_generator).div_(keep)
        return torch.mul(x, mask, out=dropped)

    def dropout_masks(self, batch: int) -> list[torch.Tensor]:
        """Each hidden layer's (K, width, B) mask, member k's drawn as MLPStep draws it training alone.

        Member by member, layer by layer, a (B, width) tensor of the member's own width is drawn from its
        own generator, as MLPStep draws it from the global one, and stored transposed; then all are scaled
        at once. Members without dropout keep ones, and padded units zeros (their activations are zero)."""
        masks = self.masks.get(batch)
        if masks is None:
            masks = []
            for position, width in enumerate(self.sizes[1:-1], start=1):
                mask = self.param.new_zeros((len(self.members), width, batch))
                for row, member in enumerate(self.members):
                    mask[row, : member.shape.sizes[position]] = 1.0
                masks.append(mask)
            self.masks[batch] = masks
        for row, member in enumerate(self.members):
            rate = member.shape.dropout
            if not rate:
                continue
            for position, mask in enumerate(masks, start=1):
                width = member.shape.sizes[position]
                drawn = mask.new_empty((batch, width)).bernoulli_(1 - rate, generator=member.dropout_generator)
                mask[row, :width].copy_(drawn.t())
        for mask in masks:
            mask.div_(self.keep)
        return masks

    def minus_one_rows(self, count: int, length: int) -> torch.Tensor:
        """(K, 1, length) of -1 for subtracting the one-hot targets, kept between steps."""
        if self.minus_ones.shape[2] < length:
            self.minus_ones = self.param.new_full((count, 1, length), -1.0)
        return self.minus_ones[:, :, :length]
