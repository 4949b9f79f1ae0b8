"""The pack's ComfyUI nodes: thin adapters over the core package ``distill``."""
from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from . import correctors
from .dds import DDSLoss
from .ddim_invert import DDIMInvertNoise
from .lmc import LMCCorrector
from .nfsd import NFSDGuidance
from .optimize_3d import Optimize3D
from .optimize_image import OptimizeImage
from .optimize_latent import OptimizeLatent
from .pds import PDSLoss
from .save_coloured_glb import SaveColouredGLB
from .sds import SDSLoss
from .train_corrector import TrainLMCCorrector
from .variants import ASDLoss, CSDLoss, ISMLoss, SDSBridgeLoss
from .views import ViewPrompts3D


class ScoreDistillationExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [SDSLoss, NFSDGuidance, CSDLoss, ISMLoss, SDSBridgeLoss, ASDLoss, DDSLoss, PDSLoss, DDIMInvertNoise,
                LMCCorrector, TrainLMCCorrector, OptimizeLatent, OptimizeImage, ViewPrompts3D, Optimize3D,
                SaveColouredGLB]


async def comfy_entrypoint() -> ScoreDistillationExtension:
    correctors.register_folder()
    return ScoreDistillationExtension()
