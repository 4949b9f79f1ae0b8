"""The "Save Coloured GLB" node: Optimize 3D's voxel through core's surface-net mesher, each vertex coloured
with the scene's albedo there, saved as a GLB in the output folder for core Preview 3D."""
import os

import folder_paths
from comfy_api.latest import io
from comfy_extras.nodes_hunyuan3d import VOXEL, voxel_to_mesh_surfnet

from ..distill.glb import glb_bytes
from ..distill.scene import colours_at, surface_net_points
from .types import CATEGORY


class ColouredVoxel(VOXEL):
    """A VOXEL that also carries the scene's albedo: colors [B, 3, D, H, W] in 0..1 on the same cells as data
    [B, D, H, W]; core nodes see a plain VOXEL."""

    def __init__(self, data, colors):
        super().__init__(data)
        self.colors = colors


class SaveColouredGLB(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DistillSaveColouredGLB",
            display_name="Save Coloured GLB (3D scene)",
            category=CATEGORY,
            description="Meshes Optimize 3D's voxel as core VoxelToMesh (surface net) does, colours each vertex "
                        "with the scene's albedo there and saves a vertex-coloured GLB to the output folder. "
                        "model_file → Preview 3D shows it in the 3D viewer.",
            is_output_node=True,
            inputs=[
                io.Voxel.Input("voxel", tooltip="Optimize 3D's voxel (it carries the scene's colours)."),
                io.Float.Input("threshold", default=0.6, min=0.01, max=0.99, step=0.01,
                               tooltip="Opacity of the surface, as VoxelToMesh's threshold (default 0.6)."),
                io.String.Input("filename_prefix", default="mesh/ComfyUI",
                                tooltip="Prefix of the saved file in the output folder, as Save GLB's."),
            ],
            outputs=[io.String.Output(display_name="model_file",
                                      tooltip="The saved GLB's path in the output folder: Preview 3D's "
                                              "model_file.")],
        )

    @classmethod
    def execute(cls, voxel, threshold, filename_prefix) -> io.NodeOutput:
        if not isinstance(voxel, ColouredVoxel):
            raise ValueError("voxel: it carries no colours; connect Optimize 3D's voxel output here, or mesh other "
                             "VOXELs with VoxelToMesh → Save GLB.")
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory())
        results = []
        for data, colors in zip(voxel.data, voxel.colors):
            try:
                vertices, faces = voxel_to_mesh_surfnet(data.float().cpu(), threshold=threshold)
            except ZeroDivisionError:  # core's surface net divides by round(surface cells / 50)
                raise ValueError(f"threshold: the surface at {threshold} crosses fewer than 25 cells, too few for "
                                 "core's surface net; lower the threshold or optimize more steps.") from None
            if len(faces) == 0:
                raise ValueError(f"threshold: the voxel has no surface at {threshold} (its opacity spans "
                                 f"{data.min():.3g}…{data.max():.3g}); set a threshold inside that span.")
            rgb = colours_at(colors[None].float().cpu(), surface_net_points(vertices, data.shape[-1]))
            name = f"{filename}_{counter:05}_.glb"
            with open(os.path.join(folder, name), "xb") as f:
                f.write(glb_bytes(vertices.numpy(), rgb.numpy(), faces.numpy()))
            results.append({"filename": name, "subfolder": subfolder, "type": "output"})
            counter += 1
        model_file = f"{results[0]['subfolder']}/{results[0]['filename']}".lstrip("/")
        return io.NodeOutput(model_file, ui={"3d": results})
