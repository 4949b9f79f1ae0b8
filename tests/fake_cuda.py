"""A CUDA device on a machine without one, for device-placement tests (PyTorch's fake tensors).

Inside ``fake_cuda()`` tensors and modules can be put on "cuda"; every op computes shapes, dtypes and
devices only, and an op that mixes a cuda tensor with a CPU one (other than a 0-d scalar, as on a
real GPU) raises ``FakeTensorDeviceMismatchError``. Two things a real GPU has and fake tensors lack are
stood in for:
- a value read on the host (``.item()``, ``float()``, ``.tolist()``, ``if tensor:``) answers a fixed
  plausible value — True, 0, or 0.5 — so host-side branches and loops take their ordinary path;
- autograd's engine needs a CUDA runtime even for fake tensors, so ``Tensor.backward`` gives every
  leaf the graph reaches a zero gradient on the leaf's own device (the devices a real backward
  would give); the forward that built the graph and the optimizer's update still run.

Modules must be made outside the mode (on the CPU, as a file loader or a node makes them) before the
code under test moves them: fake tensors cannot swap a parameter that was itself made fake.
"""
import contextlib

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv

CUDA = torch.device("cuda", 0)


class _FakeCudaMode(FakeTensorMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            t = args[0]
            return True if t.dtype == torch.bool else 0.5 if t.is_floating_point() else 0
        return super().__torch_dispatch__(func, types, args, kwargs)


def _leaves(tensor: torch.Tensor) -> list[torch.Tensor]:
    seen, stack, leaves = set(), [tensor.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):
            leaves.append(node.variable)
        stack.extend(fn for fn, _ in node.next_functions)
    return leaves


def _zero_backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
    for leaf in _leaves(self):
        if leaf.grad is None:
            leaf.grad = torch.zeros_like(leaf)


@contextlib.contextmanager
def fake_cuda():
    mode = _FakeCudaMode(allow_non_fake_inputs=True, shape_env=ShapeEnv())
    backward = torch.Tensor.backward
    torch.Tensor.backward = _zero_backward
    try:
        with mode:
            yield mode
    finally:
        torch.Tensor.backward = backward


def on_cuda(*tensors: torch.Tensor) -> bool:
    return all(t.device == CUDA for t in tensors)
