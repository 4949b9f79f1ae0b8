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
