"""The pack's ComfyUI nodes: thin adapters over the core package ``distill``."""
from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from .ddim_invert import DDIMInvertNoise
from .nfsd import NFSDGuidance
from .optimize_latent import OptimizeLatent
from .sds import SDSLoss


class ScoreDistillationExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [SDSLoss, NFSDGuidance, DDIMInvertNoise, OptimizeLatent]


async def comfy_entrypoint() -> ScoreDistillationExtension:
    return ScoreDistillationExtension()
