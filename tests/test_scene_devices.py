"""One step of the 3D loop with the model on a (fake) CUDA device: the scene, its renders, the cameras' rays and
the optimizer's state live there, the generators and the drawn cameras on the CPU (see fake_cuda.py)."""
import torch

from fake_cuda import CUDA, fake_cuda, on_cuda
from distill import recipes
from distill.optimize_scene import SceneSettings, SceneView, optimize_scene
from distill.scene_mixture import SceneMixturePrior
from distill.shading import Shading


class RecordingAdam(torch.optim.Adam):
    made = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        RecordingAdam.made.append(self)


def test_one_scene_step_keeps_scene_renders_and_optimizer_state_on_the_model_device(monkeypatch):
    """A diffuse step (normals and a point light besides the albedo) with the orientation and sparsity terms."""
    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    settings = SceneSettings(steps=1, render_size=16, samples=8, grid=8,
                             shading=Shading(albedo_fraction=0.0, diffuse_prob=1.0, textureless_prob=0.0))
    renders = []
    with fake_cuda():
        scene, history = optimize_scene(recipes.sds(), SceneMixturePrior(16), SceneView(16, lambda x: x), settings,
                                        device=CUDA, on_step=lambda step, rgb: renders.append(rgb))
        state = [v for s in RecordingAdam.made[-1].state.values() for v in s.values() if v.ndim > 0]
    assert on_cuda(*scene.parameters(), *renders, *state) and len(state) == 4
    assert len(history.loss) == 1
