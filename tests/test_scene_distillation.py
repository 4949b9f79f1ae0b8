"""SDS-3D on the exact multi-view prior (distill/scene_mixture.py): what the prior predicts, measured.

With the prior of three asymmetric figures seen from each camera, the mode SDS climbs to is one figure, the
same from every side: every held-out view picks it and matches it. A camera-blind prior shows every camera
the figures' fronts, so the scene that pleases every camera has a front on every side — the multi-face
(Janus) failure; view prompts (each camera shown the figures from every azimuth its label covers) tell the
back from the front and remove it. Small grids, few steps: the
benchmark (benchmarks/scene_quality.py) runs every loss longer.
"""
import pytest
import torch

from distill import recipes
from distill.cameras import turntable
from distill.optimize_scene import SceneSettings, SceneView, optimize_scene, render_views
from distill.cameras import Cameras, wrap_azimuth
from distill.scene_mixture import SceneMixturePrior, score, view_cameras
from distill.regularizers import Regularizers
from distill.shading import Shading

NATIVE = 32
STEPS = {"camera": 150, "front": 80, "prompt": 250}


def held_out():
    cameras = turntable(8, 15.0)
    return cameras.with_azimuth(cameras.azimuth + 22.5)


@pytest.fixture(scope="module")
def distilled():
    """SDS from a random scene on each variant of the prior, scored on the held-out turntable. cfg 1: the prior's
    own score (the unconditional branch only lacks the view; benchmarks/scene_quality.py also runs cfg 100);
    albedo shading of flat-coloured figures, so no regularizer has a shaded view to protect."""
    cache = {}

    def run(views):
        if views not in cache:
            settings = SceneSettings(steps=STEPS[views], lr=0.1, render_size=NATIVE, samples=32, grid=24,
                                     shading=Shading(albedo_fraction=1.0),
                                     regularizers=Regularizers(orientation=(0, 0), sparsity=0))
            scene, _ = optimize_scene(recipes.sds(cfg=1.0), SceneMixturePrior(NATIVE, views),
                                      SceneView(NATIVE, lambda x: x), settings)
            cache[views] = score(render_views(scene, held_out(), NATIVE, 96), held_out(), SceneMixturePrior(NATIVE))
        return cache[views]

    return run


def test_sds_on_the_multiview_prior_distils_one_figure_seen_alike_from_every_held_out_side(distilled):
    s = distilled("camera")
    assert s.consistency == 1 and s.multi_face == 0
    assert s.psnr >= 25


def test_a_view_prompts_prior_shows_every_azimuth_its_label_covers_and_no_other():
    """A camera at 100° (side) is shown both sides, 45°…135° and −135°…−45°, its own view among them; one at 170°
    (back) only 135°…225°; none is shown the front."""
    cameras = Cameras(torch.tensor([15.0, 15.0]), torch.tensor([100.0, 170.0]), torch.full((2,), 2.0),
                      torch.full((2,), 70.0))
    side, back = (wrap_azimuth(c.azimuth) for c in view_cameras(cameras, "prompt"))
    assert side.abs().min() > 45 and side.abs().max() < 135 and (side > 0).any() and (side < 0).any()
    assert 100 in side.tolist() and len(side) == 18
    assert back.abs().min() > 135 and 170 in back.tolist() and len(back) == 9


def test_a_camera_blind_prior_puts_a_front_on_the_back_and_view_prompts_remove_it(distilled):
    """Measured: at 80 steps the camera-blind scene shows a front in at least 3 of the 4 held-out views from
    behind; with view prompts, at 250 steps (the label's mixture spreads over more images, so it sharpens later:
    at 150 steps one side view of four was still a tie), in none, the nearest view from behind 2 dB nearer its
    own figure than the front, and its figure stays the same in every view."""
    blind, prompted = distilled("front"), distilled("prompt")
    assert blind.multi_face >= 0.75
    assert prompted.multi_face == 0 and prompted.consistency == 1


def test_optimize_scene_runs_on_its_own_under_inference_mode():
    """ComfyUI executes nodes under torch.inference_mode(); the core loop switches it off itself, so a caller that
    does not wrap it (as Optimize 3D does) still gets a trained scene, not an inference-tensor error."""
    settings = SceneSettings(steps=2, render_size=16, samples=8, grid=8, shading=Shading(albedo_fraction=1.0))
    with torch.inference_mode():
        scene, history = optimize_scene(recipes.sds(cfg=1.0), SceneMixturePrior(16), SceneView(16, lambda x: x),
                                        settings)
    assert len(history.loss) == 2 and not scene.density.is_inference()
