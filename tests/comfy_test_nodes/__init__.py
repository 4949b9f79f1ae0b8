"""Test-only nodes for a headless ComfyUI: a tiny random SD1.5-family model and random conditioning.

Real ComfyUI model classes, no downloads; loaded by the server tests beside the pack.
"""
import sys
from pathlib import Path


sys.path.append(str(Path(__file__).resolve().parents[1]))
import comfy_harness  # noqa: E402


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


NODE_CLASS_MAPPINGS = {"DistillTestTinyModel": TinyModel, "DistillTestConditioning": TinyConditioning}
