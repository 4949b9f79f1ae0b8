"""ComfyUI entry point of the score-distillation pack."""
from .nodes import comfy_entrypoint

__all__ = ["comfy_entrypoint"]
