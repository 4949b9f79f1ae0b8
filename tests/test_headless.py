"""The headless runner (`python -m headless`): workflow edits offline, then against a live ComfyUI —
progress, downloads, the server's errors, Ctrl-C / SIGTERM / SIGHUP, and the README's main-job command."""
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from comfy_harness import PACK_ROOT
from headless.workflow import WorkflowError, find_node, load, set_input

SDS = PACK_ROOT / "example_workflows" / "api" / "sds_text_to_image.json"
FAST = ["--set", "EmptyLatentImage.width=64", "--set", "EmptyLatentImage.height=64"]


def runner(*args):
    return [sys.executable, "-m", "headless", *map(str, args)]


def test_a_ui_workflow_is_refused_naming_its_api_twin():
    with pytest.raises(WorkflowError, match="UI workflow .* example_workflows/api/sds_text_to_image.json"):
        load(PACK_ROOT / "example_workflows" / "sds_text_to_image.json")


def test_set_finds_a_node_by_id_title_or_class_and_keeps_each_inputs_type():
    prompt = load(SDS)
    set_input(prompt, "DistillOptimizeLatent.steps=20")
    set_input(prompt, f"{find_node(prompt, 'DistillSDSLoss')}.cfg=50")
    set_input(prompt, "positive.text=42")
    set_input(prompt, "DistillSDSLoss.fixed_noise=true")
    loss, opt, positive = (prompt[find_node(prompt, name)]["inputs"]
                           for name in ("DistillSDSLoss", "DistillOptimizeLatent", "positive"))
    assert (opt["steps"], loss["cfg"], loss["fixed_noise"], positive["text"]) == (20, 50.0, True, "42")
    assert isinstance(loss["cfg"], float)


@pytest.mark.parametrize("assignment,message", [
    ("Optimize.steps=3", "'Optimize' matches no node"),
    ("CLIPTextEncode.text=x", "'CLIPTextEncode' matches several nodes"),
    ("DistillOptimizeLatent.stepz=3", "has no input 'stepz'; its inputs: steps,"),
    ("DistillOptimizeLatent.latent=3", "'latent' of node .* is wired to node"),
    ("DistillOptimizeLatent.steps=3.5", "'steps' of node .* takes an integer"),
    ("DistillSDSLoss.fixed_noise=yes", "takes true or false"),
    ("steps=3", "write NODE.input=value"),
])
def test_set_refuses_what_it_cannot_apply_naming_it(assignment, message):
    with pytest.raises(WorkflowError, match=message):
        set_input(load(SDS), assignment)


def test_no_server_is_reported_with_the_address_and_exit_status_1():
    result = subprocess.run(runner(SDS, "--server", "127.0.0.1:1"), cwd=PACK_ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and "no ComfyUI answers at http://127.0.0.1:1" in result.stderr


@pytest.mark.comfyui
def test_a_refused_prompt_exits_1_with_the_servers_message(live_server, tmp_path):
    result = subprocess.run(runner(SDS, "--server", live_server.address, "--out", tmp_path,
                                   "--set", "CheckpointLoaderSimple.ckpt_name=missing.safetensors"),
                            cwd=PACK_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Prompt outputs failed validation" in result.stderr
    assert "CheckpointLoaderSimple: Value not in list: ckpt_name: 'missing.safetensors'" in result.stderr


@pytest.mark.comfyui
def test_a_failing_node_exits_1_with_the_servers_message(live_server, tmp_path):
    prompt = load(SDS)
    empty = prompt[find_node(prompt, "EmptyLatentImage")]
    empty["class_type"] = "EmptyHunyuanLatentVideo"  # a video latent [B, 16, T, H, W] for an image model
    empty["inputs"] |= {"width": 64, "height": 64, "length": 1}
    path = tmp_path / "wrong_latent.json"
    path.write_text(json.dumps(prompt))
    result = subprocess.run(runner(path, "--server", live_server.address, "--out", tmp_path / "out"),
                            cwd=PACK_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert re.search(r"node \d+ DistillOptimizeLatent failed: ValueError: latent: its samples are .* works on 4-D latents",
                     result.stderr), result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.comfyui
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_ctrl_c_sigterm_and_sighup_stop_the_run_on_the_server_and_exit_128_plus_the_signal(live_server, tmp_path,
                                                                                          stop_signal):
    """Ctrl-C, a timeout's or CI's SIGTERM, a closed terminal's SIGHUP: no job is left running on the server."""
    proc = subprocess.Popen(runner(SDS, "--server", live_server.address, "--out", tmp_path, *FAST,
                                   "--set", "DistillOptimizeLatent.steps=10000"),
                            cwd=PACK_ROOT, stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()
    prompt_id = re.search(r"queued prompt (\S+)", first).group(1)
    deadline = time.time() + 120
    while prompt_id not in live_server.running() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2)
    proc.send_signal(stop_signal)
    assert proc.wait(60) == 128 + stop_signal
    assert f"stopped by {stop_signal.name}: asked ComfyUI to stop prompt {prompt_id}" in proc.stderr.read()
    entry = live_server.wait(prompt_id, timeout=60)
    assert "execution_interrupted" in [m[0] for m in entry["status"]["messages"]]
    queue = live_server.get("/queue").json()
    assert queue["queue_running"] == [] and queue["queue_pending"] == []
    assert not list(tmp_path.iterdir())


@pytest.mark.comfyui
def test_the_readme_main_job_command_runs_and_downloads_its_outputs(live_server, tmp_path):
    """The README's command as written, pointed at the test server, with a small latent and few steps."""
    readme = (PACK_ROOT / "README.md").read_text()
    command = re.search(r"^ {4}(python -m headless .*)$", readme, re.M).group(1)
    extra = ["--server", live_server.address, "--out", str(tmp_path), *FAST, "--set", "DistillOptimizeLatent.steps=3"]
    result = subprocess.run([sys.executable, *shlex.split(command)[1:], *extra], cwd=PACK_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "3/3 [" in result.stderr
    saved = [Path(line.removeprefix("saved ")) for line in result.stdout.splitlines()]
    assert len(saved) == 2 and all(p.is_file() and p.is_relative_to(tmp_path) for p in saved), result.stdout


@pytest.mark.comfyui
def test_the_readme_any_folder_command_runs_from_another_folder_and_saves_under_it(live_server, tmp_path):
    """The installed command as the README writes it, run in a folder holding ComfyUI/custom_nodes/score-distillation
    (the pack): the console script's entry point, the workflow path and --out all relative to that folder."""
    readme = (PACK_ROOT / "README.md").read_text()
    command = shlex.split(re.search(r"^ {4}(score-distillation-run .*)$", readme, re.M).group(1))
    pack = tmp_path / "ComfyUI" / "custom_nodes" / "score-distillation"
    pack.parent.mkdir(parents=True)
    pack.symlink_to(PACK_ROOT, target_is_directory=True)
    module, function = tomllib.loads((PACK_ROOT / "pyproject.toml").read_text())["project"]["scripts"][command[0]].split(":")
    entry_point = f"import sys; from {module} import {function}; sys.exit({function}())"  # what pip's script runs
    extra = ["--server", live_server.address, *FAST, "--set", "DistillOptimizeLatent.steps=1"]
    result = subprocess.run([sys.executable, "-c", entry_point, *command[1:], *extra], cwd=tmp_path,
                            env=os.environ | {"PYTHONPATH": str(PACK_ROOT)}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    saved = [Path(line.removeprefix("saved ")) for line in result.stdout.splitlines()]
    assert len(saved) == 2 and all((tmp_path / p).is_file() and p.parts[0] == "output" for p in saved), result.stdout
