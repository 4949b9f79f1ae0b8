"""The "LMC Corrector" node: picks a corrector file for LMC-SDS."""
import folder_paths
from comfy_api.latest import io

from ..distill.corrector_file import CorrectorFileError
from . import correctors
from .checks import check_widgets, widget_message
from .types import CATEGORY, LMCCorrectorType


class LMCCorrector(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DistillLMCCorrector",
            display_name="LMC Corrector",
            category=CATEGORY,
            description="Loads a learned manifold corrective for LMC-SDS (safetensors only). Connect it to SDS "
                        "Loss's corrector input; it must have been made for the model's latent space.",
            inputs=[
                io.Combo.Input("corrector_name", options=folder_paths.get_filename_list(correctors.FOLDER),
                               tooltip=f"A corrector file from models/{correctors.FOLDER}/ or the pack's "
                                       "corrector_weights/. Make one for your checkpoint with Train LMC Corrector."),
            ],
            outputs=[LMCCorrectorType.Output(display_name="corrector")],
        )

    @classmethod
    def validate_inputs(cls, corrector_name: str) -> bool | str:
        if corrector_name is None:
            return True
        try:
            correctors.check_name(corrector_name)
        except ValueError as e:
            return str(e)
        return widget_message(cls, corrector_name=corrector_name) or True

    @classmethod
    def execute(cls, corrector_name) -> io.NodeOutput:
        check_widgets(cls, locals())
        try:
            return io.NodeOutput(correctors.load(corrector_name))
        except CorrectorFileError as e:
            raise CorrectorFileError(f"corrector_name: {e}") from e
