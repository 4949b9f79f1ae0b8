"""Test-only nodes for a headless ComfyUI: a tiny random SD1.5-family model, random conditioning, a tiny VAE,
tensors of any shape, and a file reader (the positive control of the file watch).

Real ComfyUI model classes, no downloads; loaded by the server tests beside the pack. With DISTILL_TEST_WATCH
set, every file event (open, listdir, remove, rename, …) on a path inside that folder, links resolved, is
appended to the file DISTILL_TEST_WATCH_LOG: the bad-input tests check that nothing outside ComfyUI's folders
is read or written. With DISTILL_TEST_FORWARDS set, the batch size of every diffusion-model forward
(BaseModel.apply_model) is appended to that file: benchmarks/workflow_cost.py counts a workflow's forwards.
"""
import os
import sys
import threading
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parents[1]))
import comfy_harness  # noqa: E402

FILE_EVENTS = {"open", "os.listdir", "os.scandir", "os.remove", "os.rename", "os.mkdir", "os.rmdir", "os.symlink",
               "os.link", "os.truncate", "os.chmod", "os.utime", "shutil.copyfile", "shutil.rmtree"}


def watch(folder: str, log_path: str) -> None:
    folder = os.path.realpath(folder)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    busy = threading.local()

    def hook(event, args):
        if event not in FILE_EVENTS or getattr(busy, "on", False):
            return
        busy.on = True
        try:
            for arg in args:
                if isinstance(arg, (str, bytes, os.PathLike)):
                    path = os.path.realpath(os.fsdecode(arg))
                    if path == folder or path.startswith(folder + os.sep):
                        os.write(log, f"{event} {path}\n".encode())
        finally:
            busy.on = False

    sys.addaudithook(hook)


if os.environ.get("DISTILL_TEST_WATCH"):
    watch(os.environ["DISTILL_TEST_WATCH"], os.environ["DISTILL_TEST_WATCH_LOG"])


def count_forwards(log_path: str) -> None:
    import comfy.model_base

    apply_model = comfy.model_base.BaseModel.apply_model

    def counted(self, x, *args, **kwargs):
        with open(log_path, "a") as log:
            log.write(f"{x.shape[0]}\n")
        return apply_model(self, x, *args, **kwargs)

    comfy.model_base.BaseModel.apply_model = counted


if os.environ.get("DISTILL_TEST_FORWARDS"):
    count_forwards(os.environ["DISTILL_TEST_FORWARDS"])


class TinyModel:
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = "testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"kind": (["eps", "v", "flow"],), "seed": ("INT", {"default": 0})}}

    def load(self, kind, seed):
        return (comfy_harness.tiny_model(kind, seed),)


class TinyConditioning:
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0})}}

    def make(self, seed):
        return (comfy_harness.conditioning(seed),)


class TinyVAE:
    """A tiny AutoencoderKL (4 or 16 latent channels) or TAESD."""
    RETURN_TYPES = ("VAE",)
    FUNCTION = "load"
    CATEGORY = "testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0})},
                "optional": {"kind": (["autoencoder_kl", "16_channels", "taesd"],)}}

    def load(self, seed, kind="autoencoder_kl"):
        return (comfy_harness.tiny_vae(seed, taesd=kind == "taesd", channels=16 if kind == "16_channels" else 4),)


def shaped(shape: str) -> torch.Tensor:
    """A tensor of the shape "1,64,64,3", 0.5 everywhere."""
    return torch.full([int(n) for n in shape.split(",")], 0.5)


class ShapedImage:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"
    CATEGORY = "testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"shape": ("STRING", {"default": "1,64,64,3"})}}

    def make(self, shape):
        return (shaped(shape),)


class ShapedLatent:
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "make"
    CATEGORY = "testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"shape": ("STRING", {"default": "1,4,16,16"})}}

    def make(self, shape):
        return ({"samples": shaped(shape)},)


class ReadFile:
    """Reads any file: what no pack node may do outside ComfyUI's folders."""
    RETURN_TYPES = ("INT",)
    FUNCTION = "read"
    CATEGORY = "testing"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"path": ("STRING", {"default": ""})}}

    def read(self, path):
        return (len(Path(path).read_bytes()),)


NODE_CLASS_MAPPINGS = {"DistillTestTinyModel": TinyModel, "DistillTestConditioning": TinyConditioning,
                       "DistillTestTinyVAE": TinyVAE, "DistillTestShapedImage": ShapedImage,
                       "DistillTestShapedLatent": ShapedLatent, "DistillTestReadFile": ReadFile}
