"""Autograd formulas and fake (meta) kernels of the ``torch.ops.rstfast`` ops.

The ops themselves (schemas and CPU/CUDA kernels) live in the C++ extension; this module adds what
PyTorch needs from Python once the library is loaded: the backward of the two forward ops
(through ``rstfast::lift_conv_backward`` / ``rstfast::group_conv_backward``) and shape-only
kernels so the ops trace under ``torch.compile``. The basis is a fixed buffer: it gets no gradient.
"""
from __future__ import annotations

import torch

__all__ = ["register_python_parts"]


def _out_side(side: int, kernel: int, stride: int, padding: int) -> int:
    return (side + 2 * padding - kernel) // stride + 1


def _fake_lift_forward(x, weight, basis, bias, stride, padding, support):
    k = basis.shape[-1]
    return x.new_empty(x.shape[0], weight.shape[0], basis.shape[1],
                       _out_side(x.shape[2], k, stride, padding),
                       _out_side(x.shape[3], k, stride, padding))


def _fake_group_forward(x, weight, basis, bias, num_rotations, rotation_size, scale_size, stride,
                        padding, support):
    k = basis.shape[-1]
    return x.new_empty(x.shape[0], weight.shape[0], basis.shape[1],
                       _out_side(x.shape[3], k, stride, padding),
                       _out_side(x.shape[4], k, stride, padding))


def _fake_grads(x, weight, output_mask):
    return (x.new_empty(x.shape) if output_mask[0] else x.new_empty(0),
            weight.new_empty(weight.shape) if output_mask[1] else weight.new_empty(0))


def _fake_lift_backward(grad_y, x, weight, basis, stride, padding, support, output_mask):
    return _fake_grads(x, weight, output_mask)


def _fake_group_backward(grad_y, x, weight, basis, num_rotations, rotation_size, scale_size,
                         stride, padding, support, output_mask):
    return _fake_grads(x, weight, output_mask)


def _setup(ctx, inputs, output):
    x, weight, basis, bias = inputs[:4]
    ctx.save_for_backward(x, weight, basis)
    ctx.static_args = inputs[4:]        # (stride, padding, support) or (R, Lr, Ls, stride, ...)


def _backward(op, ctx, grad_y):
    x, weight, basis = ctx.saved_tensors
    mask = [bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1])]
    grad_x, grad_weight = (None, None)
    if any(mask):
        grad_x, grad_weight = op(grad_y.contiguous(), x, weight, basis, *ctx.static_args, mask)
    grad_bias = grad_y.sum(dim=(0, 2, 3, 4)) if ctx.needs_input_grad[3] else None
    return ((grad_x if mask[0] else None, grad_weight if mask[1] else None, None, grad_bias)
            + (None,) * len(ctx.static_args))


def _lift_backward(ctx, grad_y):
    return _backward(torch.ops.rstfast.lift_conv_backward.default, ctx, grad_y)


def _group_backward(ctx, grad_y):
    return _backward(torch.ops.rstfast.group_conv_backward.default, ctx, grad_y)


def register_python_parts() -> None:
    """Attach fake kernels and autograd to the loaded ops (called once by the build)."""
    lib = torch.library
    lib.register_fake("rstfast::lift_conv_forward")(_fake_lift_forward)
    lib.register_fake("rstfast::group_conv_forward")(_fake_group_forward)
    lib.register_fake("rstfast::lift_conv_backward")(_fake_lift_backward)
    lib.register_fake("rstfast::group_conv_backward")(_fake_group_backward)
    lib.register_autograd("rstfast::lift_conv_forward", _lift_backward, setup_context=_setup)
    lib.register_autograd("rstfast::group_conv_forward", _group_backward, setup_context=_setup)
