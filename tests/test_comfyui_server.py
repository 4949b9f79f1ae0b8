"""A headless ComfyUI server with the pack: /object_info and an API prompt run end to end."""
import pytest

from comfy_harness import COMFYUI, SKIP_REASON, Server

pytestmark = [pytest.mark.comfyui, pytest.mark.skipif(COMFYUI is None, reason=SKIP_REASON)]

PACK_NODES = ("DistillSDSLoss", "DistillNFSDGuidance", "DistillDDIMInvertNoise", "DistillLMCCorrector",
              "DistillTrainLMCCorrector", "DistillOptimizeLatent", "DistillOptimizeImage")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("comfyui"))
    yield s
    s.stop()


def sds_prompt(steps=4, t_min=0.02, t_max=0.98):
    return {
        "1": {"class_type": "DistillTestTinyModel", "inputs": {"kind": "eps", "seed": 0}},
        "2": {"class_type": "DistillTestConditioning", "inputs": {"seed": 1}},
        "3": {"class_type": "DistillTestConditioning", "inputs": {"seed": 2}},
        "4": {"class_type": "DistillSDSLoss", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "cfg": 100.0, "weighting": "sds",
            "t_min": t_min, "t_max": t_max, "t_schedule": "uniform", "grad_clip": 0.0}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "6": {"class_type": "DistillOptimizeLatent", "inputs": {
            "latent": ["5", 0], "loss": ["4", 0], "steps": steps, "learning_rate": 0.1, "optimizer": "adamw",
            "lr_schedule": "cosine", "seed": 0, "l2_to_init": 0.0}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "distill/sds"}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["6", 1], "filename_prefix": "distill/plot"}},
    }


def test_object_info_lists_the_nodes_with_a_tooltip_on_every_input(server):
    info = server.get("/object_info").json()
    for node_id in PACK_NODES:
        node = info[node_id]
        assert node["category"] == "score_distillation"
        inputs = node["input"]["required"] | node["input"].get("optional", {})
        missing = [name for name, spec in inputs.items() if not (len(spec) > 1 and spec[1].get("tooltip"))]
        assert not missing, f"{node_id} inputs without tooltip: {missing}"
    assert info["DistillSDSLoss"]["display_name"] == "SDS Loss"
    assert info["DistillOptimizeLatent"]["display_name"] == "Optimize Latent"


def test_api_prompt_runs_sds_loss_into_optimize_latent(server):
    entry = server.run_prompt(sds_prompt())
    assert entry["status"]["status_str"] == "success", entry["status"]
    image = entry["outputs"]["8"]["images"][0]
    r = server.get(f"/view?filename={image['filename']}&subfolder={image['subfolder']}&type={image['type']}")
    assert r.ok and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    latent = entry["outputs"]["7"]["latents"][0]
    assert latent["filename"].endswith(".latent")


def test_bad_inputs_are_rejected_at_prompt_time_with_their_names(server):
    r = server.post("/prompt", {"prompt": sds_prompt(t_min=0.9, t_max=0.1)})
    assert r.status_code == 400
    assert "t_min (0.9) must be below t_max (0.1)" in r.text
    r = server.post("/prompt", {"prompt": sds_prompt(steps=0)})
    assert r.status_code == 400
    assert "steps" in r.text


def test_nfsd_prompt_without_its_negative_is_rejected_naming_it(server):
    prompt = sds_prompt()
    sds = prompt["4"]["inputs"]
    prompt["4"] = {"class_type": "DistillNFSDGuidance", "inputs": {
        k: v for k, v in sds.items() if k != "cfg"} | {"cfg": 7.5, "threshold": 0.2}}
    r = server.post("/prompt", {"prompt": prompt})
    assert r.status_code == 400
    assert "nfsd_negative" in r.text
    prompt["4"]["inputs"]["nfsd_negative"] = ["3", 0]
    entry = server.run_prompt(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
