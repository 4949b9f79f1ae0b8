"""A CUDA device on a machine without one, for device-placement tests (PyTorch's fake tensors).

Inside ``fake_cuda()`` tensors and modules can be put on "cuda"; every op computes shapes, dtypes and
devices only, and an op that mixes a cuda tensor with a CPU one (other than a 0-d scalar, as on a
real GPU) raises ``FakeTensorDeviceMismatchError``. Two things a real GPU has and fake tensors lack are
stood in for:
- a value read on the host (``.item()``, ``float()``, ``.tolist()``, ``if tensor:``) answers a fixed
  plausible value — True, 0, or 0.5 — so host-side branches and loops take their ordinary path; ``torch.equal``
  answers False (the tensors differ, as two prompts' conditionings do);
- autograd's engine needs a CUDA runtime even for fake tensors, so ``Tensor.backward`` gives every
  leaf the graph reaches a zero gradient on the leaf's own device (the devices a real backward
  would give); the forward that built the graph and the optimizer's update still run.

The mode also records in ``host_waits`` every op at which a real GPU would make the host wait for it: a value read
on the host, a copy to the CPU, and a copy to the device that is not non_blocking (from pageable memory, a plain
``.to()`` waits for the stream; a non_blocking one is staged at once).

Modules must be made outside the mode (on the CPU, as a file loader or a node makes them) before the
code under test moves them: fake tensors cannot swap a parameter that was itself made fake. A module already on
the fake device may be moved there again (ComfyUI's loader moves each layer, then the whole model): that no-op
keeps its parameters; a move of fake parameters back to the CPU is not possible, so a test makes the offload
device the fake device too. Under inference mode (ComfyUI runs nodes in it) ``aten.to`` reaches the mode
undecomposed; a move to cuda is handed on as the ``_to_copy`` it stands for.
"""
import contextlib

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv

CUDA = torch.device("cuda", 0)


def _host_wait(func, args, kwargs) -> str | None:
    aten = torch.ops.aten
    if func is aten._local_scalar_dense.default and args[0].device.type == "cuda":
        return "read on the host"
    if func is aten._to_copy.default and kwargs.get("device") is not None:
        source, target = args[0].device.type, torch.device(kwargs["device"]).type
    elif func is aten.copy_.default:
        source, target = args[1].device.type, args[0].device.type
    else:
        return None
    non_blocking = kwargs.get("non_blocking", args[2] if func is aten.copy_.default and len(args) > 2 else False)
    if source == "cuda" and target == "cpu":
        return "copy to the CPU"
    if source == "cpu" and target == "cuda" and not non_blocking:
        return "blocking copy to the device"
    return None


def _as_to_copy(func, args, kwargs):
    """An aten.to call that moves a tensor from the CPU to cuda as the (func, args, kwargs) of the _to_copy it does, any
    other call unchanged. Under inference mode aten.to reaches the mode undecomposed, and fake tensors would run
    it on a real GPU (they move only _to_copy without one)."""
    if func.overloadpacket is not torch.ops.aten.to:
        return func, args, kwargs
    named = {a.name: v for a, v in zip(func._schema.arguments, args)} | kwargs
    if "other" in named:
        named |= {"device": named["other"].device, "dtype": named["other"].dtype}
    if (named.get("device") is None or torch.device(named["device"]).type != "cuda"
            or named["self"].device.type == "cuda"):
        return func, args, kwargs
    keep = ("dtype", "layout", "device", "pin_memory", "non_blocking", "memory_format")
    return torch.ops.aten._to_copy.default, (named["self"],), {k: named[k] for k in keep if named.get(k) is not None}


class _FakeCudaMode(FakeTensorMode):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.host_waits: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        func, args, kwargs = _as_to_copy(func, args, kwargs or {})
        wait = _host_wait(func, args, kwargs)
        if wait:
            self.host_waits.append(wait)
        if func is torch.ops.aten.equal.default:
            return False
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


def _keeping_unmoved(swap):
    """swap_tensors that leaves a fake parameter in place when the module conversion changes nothing (a second
    Module.to to its own device, as a loader makes): fake parameters hold a weakref, which swap_tensors refuses."""
    def swap_tensors(t1, t2):
        if isinstance(t1, FakeTensor) and (t1.device, t1.dtype, t1.shape) == (t2.device, t2.dtype, t2.shape):
            return None
        return swap(t1, t2)
    return swap_tensors


@contextlib.contextmanager
def fake_cuda():
    mode = _FakeCudaMode(allow_non_fake_inputs=True, shape_env=ShapeEnv())
    backward, swap = torch.Tensor.backward, torch.utils.swap_tensors
    torch.Tensor.backward, torch.utils.swap_tensors = _zero_backward, _keeping_unmoved(swap)
    try:
        with mode:
            yield mode
    finally:
        torch.Tensor.backward, torch.utils.swap_tensors = backward, swap


def on_cuda(*tensors: torch.Tensor) -> bool:
    return all(t.device == CUDA for t in tensors)
