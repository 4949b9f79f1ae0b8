"""A headless ComfyUI server with the pack: /object_info and an API prompt run end to end."""
import pytest

from comfy_harness import tiny_sds_prompt

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("comfy")]

PACK_NODES = ("DistillSDSLoss", "DistillNFSDGuidance", "DistillDDIMInvertNoise", "DistillLMCCorrector",
              "DistillTrainLMCCorrector", "DistillOptimizeLatent", "DistillOptimizeImage")


def test_object_info_lists_the_nodes_with_a_tooltip_on_every_input(live_server):
    info = live_server.get("/object_info").json()
    for node_id in PACK_NODES:
        node = info[node_id]
        assert node["category"] == "score_distillation"
        inputs = node["input"]["required"] | node["input"].get("optional", {})
        missing = [name for name, spec in inputs.items() if not (len(spec) > 1 and spec[1].get("tooltip"))]
        assert not missing, f"{node_id} inputs without tooltip: {missing}"
    assert info["DistillSDSLoss"]["display_name"] == "SDS Loss"
    assert info["DistillOptimizeLatent"]["display_name"] == "Optimize Latent"


def test_api_prompt_runs_sds_loss_into_optimize_latent(live_server):
    entry = live_server.run_prompt(tiny_sds_prompt())
    assert entry["status"]["status_str"] == "success", entry["status"]
    image = entry["outputs"]["8"]["images"][0]
    r = live_server.get(f"/view?filename={image['filename']}&subfolder={image['subfolder']}&type={image['type']}")
    assert r.ok and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    latent = entry["outputs"]["7"]["latents"][0]
    assert latent["filename"].endswith(".latent")


def test_bad_inputs_are_rejected_at_prompt_time_with_their_names(live_server):
    r = live_server.post("/prompt", {"prompt": tiny_sds_prompt(t_min=0.9, t_max=0.1)})
    assert r.status_code == 400
    assert "t_min (0.9) must be below t_max (0.1)" in r.text
    r = live_server.post("/prompt", {"prompt": tiny_sds_prompt(steps=0)})
    assert r.status_code == 400
    assert "steps" in r.text


def test_nfsd_prompt_without_its_negative_is_rejected_naming_it(live_server):
    prompt = tiny_sds_prompt()
    sds = prompt["4"]["inputs"]
    prompt["4"] = {"class_type": "DistillNFSDGuidance", "inputs": {
        k: v for k, v in sds.items() if k != "cfg"} | {"cfg": 7.5, "threshold": 0.2}}
    r = live_server.post("/prompt", {"prompt": prompt})
    assert r.status_code == 400
    assert "nfsd_negative" in r.text
    prompt["4"]["inputs"]["nfsd_negative"] = ["3", 0]
    entry = live_server.run_prompt(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]


def test_save_coloured_glb_reports_its_file_as_save_glb_does_and_preview_3d_gets_its_path(live_server):
    """Through the server's executor: the history holds Save GLB's `3d` entry for the saved file and Preview 3D's
    `result` [model_file, camera_info] with the path the viewer loads from the output folder."""
    prompt = {k: v for k, v in tiny_sds_prompt().items() if k in {"1", "2", "3", "4"}}
    prompt["30"] = {"class_type": "DistillTestTinyVAE", "inputs": {"seed": 0, "kind": "autoencoder_kl"}}
    prompt["31"] = {"class_type": "DistillOptimize3D", "inputs": {
        "vae": ["30", 0], "loss": ["4", 0], "steps": 1, "learning_rate": 0.05, "render_size": 16, "grid": 16,
        "samples_per_ray": 8, "cameras_per_step": 1, "native_size": 64, "seed": 0, "elevation_min": -10.0,
        "elevation_max": 45.0, "distance_min": 1.5, "distance_max": 2.0, "fovy_min": 40.0, "fovy_max": 70.0,
        "turntable_frames": 1, "turntable_size": 16, "turntable_elevation": 15.0}}
    prompt["33"] = {"class_type": "DistillSaveColouredGLB", "inputs": {
        "voxel": ["31", 0], "threshold": 0.6, "filename_prefix": "distill/coloured"}}
    prompt["34"] = {"class_type": "Preview3D", "inputs": {"model_file": ["33", 0]}}
    entry = live_server.run_prompt(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    [saved] = entry["outputs"]["33"]["3d"]
    assert saved["subfolder"] == "distill" and saved["type"] == "output" and saved["filename"].endswith("_.glb")
    assert entry["outputs"]["34"]["result"] == [f"distill/{saved['filename']}", None]
    r = live_server.get(f"/view?filename={saved['filename']}&subfolder=distill&type=output")
    assert r.ok and r.content[:4] == b"glTF"
