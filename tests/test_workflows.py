"""The shipped workflows: generated from one description, consistent with what a live server declares,
accepted by it as shipped, listed by its template browser, and run end to end on a tiny checkpoint."""
import importlib.util
import json
import re
import subprocess
import sys
import time

import pytest

from comfy_harness import PACK_NAME, PACK_ROOT, tiny_sds_prompt
from headless.workflow import find_node

WORKFLOWS = PACK_ROOT / "example_workflows"
UI = sorted(WORKFLOWS.glob("*.json"))
API = sorted((WORKFLOWS / "api").glob("*.json"))
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def load_build():
    spec = importlib.util.spec_from_file_location("workflow_build", WORKFLOWS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_ui_workflow_has_an_api_twin_and_files_match_their_description(tmp_path):
    assert [p.name for p in UI] == [p.name for p in API] and UI
    load_build().write(tmp_path)
    for path in UI + API:
        rebuilt = tmp_path / path.relative_to(WORKFLOWS)
        assert json.loads(path.read_text()) == json.loads(rebuilt.read_text()), f"{path.name}: run example_workflows/build.py"


def test_every_ui_workflow_explains_itself_in_a_note():
    for path in UI:
        notes = [n for n in json.loads(path.read_text())["nodes"] if n["type"] == "Note"]
        assert notes and len(notes[0]["widgets_values"][0]) > 80, path.name


def is_widget(spec) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


FRONTEND_ONLY = {"SaveGLB": 1}
"""Widgets the frontend adds to a node that the server does not declare: Save GLB's 3D viewer (Comfy.SaveGLB)."""


def frontend_widgets(name: str, spec) -> int:
    """How many values the frontend (1.27.10) saves for a widget input: one, plus its "control after generate"
    value where it adds one (an INT that declares control_after_generate, or an INT named seed or noise_seed
    that declares nothing), plus the upload button's value of an image_upload combo."""
    options = spec[1] if len(spec) > 1 else {}
    control = options.get("control_after_generate", spec[0] == "INT" and name in ("seed", "noise_seed"))
    return 1 + bool(control) + bool(options.get("image_upload"))


@pytest.fixture(scope="module")
def object_info(live_server):
    return live_server.get("/object_info").json()


@pytest.mark.comfyui
@pytest.mark.parametrize("path", UI, ids=[p.stem for p in UI])
def test_ui_workflow_matches_object_info(path, object_info):
    wf = json.loads(path.read_text())
    links = {link[0]: link for link in wf["links"]}
    for n in wf["nodes"]:
        if n["type"] == "Note":
            continue
        info = object_info[n["type"]]
        declared = info["input"]["required"] | info["input"].get("optional", {})
        widgets = [name for name, spec in declared.items() if is_widget(spec)]
        extra = sum(frontend_widgets(name, declared[name]) - 1 for name in widgets) + FRONTEND_ONLY.get(n["type"], 0)
        assert len(n["widgets_values"]) == len(widgets) + extra, (path.name, n["type"])
        for i in n["inputs"]:
            assert i["name"] in declared and not is_widget(declared[i["name"]]), (n["type"], i["name"])
            assert declared[i["name"]][0] == i["type"], (n["type"], i["name"])
            if i["link"] is not None:
                assert links[i["link"]][5] == i["type"]
        for slot, o in enumerate(n["outputs"]):
            assert info["output"][slot] == o["type"] and info["output_name"][slot] == o["name"], (n["type"], o)


@pytest.mark.comfyui
@pytest.mark.parametrize("path", API, ids=[p.stem for p in API])
def test_api_workflow_matches_object_info(path, object_info):
    prompt = json.loads(path.read_text())
    for node_id, n in prompt.items():
        info = object_info[n["class_type"]]
        required = info["input"]["required"]
        declared = required | info["input"].get("optional", {})
        assert set(required) <= set(n["inputs"]), (path.name, node_id, set(required) - set(n["inputs"]))
        for name, value in n["inputs"].items():
            assert name in declared, (path.name, n["class_type"], name)
            if isinstance(value, list):
                source = prompt[value[0]]
                assert object_info[source["class_type"]]["output"][value[1]] == declared[name][0]


@pytest.mark.comfyui
def test_template_browser_lists_every_ui_workflow_and_serves_it(live_server):
    templates = live_server.get("/api/workflow_templates").json()
    assert sorted(templates[PACK_NAME]) == [p.stem for p in UI]
    for path in UI:
        r = live_server.get(f"/api/workflow_templates/{PACK_NAME}/{path.name}")
        assert r.ok and r.json() == json.loads(path.read_text()), path.name


@pytest.mark.comfyui
def test_server_accepts_every_api_workflow_as_shipped(live_server, trained):
    """Each file is validated by POST /prompt while a long prompt holds the queue; none of them runs. The LMC
    workflows' corrector is the one the train_corrector workflow made."""
    blocker = live_server.queue(tiny_sds_prompt(steps=10000))
    queued = []
    try:
        while blocker not in live_server.running():
            time.sleep(0.1)
        for path in API:
            r = live_server.post("/prompt", {"prompt": json.loads(path.read_text())})
            assert r.ok and r.json()["node_errors"] == {}, (path.name, r.text)
            queued.append(r.json()["prompt_id"])
    finally:
        live_server.post("/queue", {"delete": queued})
        live_server.post("/interrupt", {"prompt_id": blocker})
        live_server.wait(blocker)
    history = live_server.get("/history").json()
    assert not set(queued) & set(history)


# Settings that take every path of each workflow in seconds on CPU: NODE CLASS.input → value.
FAST = {
    "EmptyLatentImage.width": 64, "EmptyLatentImage.height": 64, "DistillOptimizeLatent.steps": 2,
    "DistillOptimizeImage.steps": 3, "DistillOptimizeImage.whole_image_steps": 1,
    "DistillOptimizeImage.native_size": 64, "DistillDDIMInvertNoise.inversion_steps": 2,
    "DistillTrainLMCCorrector.pairs_per_latent": 2, "DistillTrainLMCCorrector.image_size": 64,
    "DistillOptimize3D.steps": 2, "DistillOptimize3D.render_size": 16, "DistillOptimize3D.grid": 8,
    "DistillOptimize3D.samples_per_ray": 16, "DistillOptimize3D.native_size": 64,
    "DistillOptimize3D.turntable_frames": 3, "DistillOptimize3D.turntable_size": 32,
}
PNG = b"\x89PNG\r\n\x1a\n"
SAVED = {"SaveImage": ".png", "PreviewImage": ".png", "SaveGLB": ".glb", "SaveAnimatedWEBP": ".webp"}
"""The file each output node of the workflows writes, one per image (one per mesh for SaveGLB, one per batch for
SaveAnimatedWEBP)."""


def fast_values(prompt: dict) -> dict[str, object]:
    """FAST for the classes in the prompt, and the folder Train LMC Corrector reads: NODE CLASS.input → value."""
    classes = {n["class_type"] for n in prompt.values()}
    values = {k: v for k, v in FAST.items() if k.split(".")[0] in classes}
    if "DistillTrainLMCCorrector" in classes:
        values["DistillTrainLMCCorrector.folder"] = "corrector_photos"
    return values


def fast_settings(prompt: dict) -> list[str]:
    """--set arguments for the runner: by class, or by node id where a class has several nodes (loss_comparison)."""
    args = []
    for key, value in fast_values(prompt).items():
        class_type, name = key.split(".")
        ids = [i for i, n in prompt.items() if n["class_type"] == class_type]
        targets = ids if len(ids) > 1 else [class_type]
        args += [arg for target in targets for arg in ("--set", f"{target}.{name}={value}")]
    return args


def run_workflow(server, name: str, out) -> subprocess.CompletedProcess:
    """The pack's headless runner on example_workflows/api/NAME.json with FAST settings."""
    path = WORKFLOWS / "api" / f"{name}.json"
    command = [sys.executable, "-m", "headless", str(path), "--server", server.address, "--out", str(out)]
    return subprocess.run(command + fast_settings(json.loads(path.read_text())), cwd=PACK_ROOT,
                          capture_output=True, text=True, timeout=600)


def check_outputs(name: str, result: subprocess.CompletedProcess, out) -> None:
    """The run succeeded, showed progress, and downloaded one file per output node: PNGs, meshes that parse with
    vertices, animations with more than one frame."""
    assert result.returncode == 0, result.stderr
    prompt = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    suffixes = sorted(SAVED[n["class_type"]] for n in prompt.values() if n["class_type"] in SAVED)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert sorted(f.suffix for f in files) == suffixes and len(files) == result.stdout.count("saved "), result.stdout
    for f in files:
        check_file(f)
    assert re.search(r"\b(\d+)/\1 \[", result.stderr), f"no progress bar reached its end:\n{result.stderr}"
    for key, steps in FAST.items():
        if key.endswith(".steps") and key.split(".")[0] in {n["class_type"] for n in prompt.values()}:
            assert f"{steps}/{steps} [" in result.stderr, result.stderr
    if name not in ("train_corrector", "text_to_3d"):  # their results are a corrector and a mesh with a turntable
        check_result(name, prompt, out)


GRIDS = {"loss_comparison": (4, 2)}
"""Workflows whose result joins several results: columns and rows."""


def check_result(name: str, prompt: dict, out) -> None:
    """The result image has the size of what the workflow optimizes (the loaded 96×80 example, or the FAST 64×64
    Empty Latent Image; a grid of them where GRIDS says) and is a picture, not a flat fill (a NaN result decodes to
    black)."""
    from PIL import Image

    (path,) = [f for f in out.rglob("*.png") if re.fullmatch(rf"{name}_\d+_\.png", f.name)]
    loads_image = any(n["class_type"] == "LoadImage" for n in prompt.values())
    (w, h), (columns, rows) = ((96, 80) if loads_image else (64, 64)), GRIDS.get(name, (1, 1))
    with Image.open(path) as img:
        assert img.size == (w * columns, h * rows), (name, img.size)
        assert max(hi - lo for lo, hi in img.convert("RGB").getextrema()) > 0, f"{name}: a flat image"


def glb_vertices(data: bytes) -> int:
    """Vertices of the meshes in a binary glTF file: the POSITION accessors' counts (glTF 2.0, §4.4 GLB)."""
    import struct

    magic, version, length = struct.unpack_from("<4sII", data)
    assert magic == b"glTF" and version == 2 and length == len(data)
    chunk_length, chunk_type = struct.unpack_from("<I4s", data, 12)
    assert chunk_type == b"JSON"
    gltf = json.loads(data[20:20 + chunk_length])
    return sum(gltf["accessors"][p["attributes"]["POSITION"]]["count"]
               for mesh in gltf["meshes"] for p in mesh["primitives"])


def check_file(path) -> None:
    if path.suffix == ".png":
        assert path.read_bytes()[:8] == PNG, path
    elif path.suffix == ".glb":
        assert glb_vertices(path.read_bytes()) > 0, path
    else:
        from PIL import Image

        with Image.open(path) as image:
            assert image.format == "WEBP" and image.n_frames > 1, (path, image.format)


@pytest.fixture(scope="module")
def trained(live_server, tmp_path_factory):
    out = tmp_path_factory.mktemp("train_corrector")
    return out, run_workflow(live_server, "train_corrector", out)


@pytest.mark.comfyui
def test_train_corrector_workflow_makes_the_corrector_the_lmc_workflows_load(live_server, trained):
    out, result = trained
    check_outputs("train_corrector", result, out)
    prompt = json.loads((WORKFLOWS / "api" / "lmc_sds_text_to_image.json").read_text())
    name = prompt[find_node(prompt, "DistillLMCCorrector")]["inputs"]["corrector_name"]
    assert (live_server.base / "models" / "lmc_correctors" / name).is_file()


@pytest.mark.comfyui
@pytest.mark.parametrize("name", [p.stem for p in API if p.stem != "train_corrector"])
def test_api_workflow_runs_end_to_end_through_the_runner(name, live_server, trained, tmp_path):
    check_outputs(name, run_workflow(live_server, name, tmp_path), tmp_path)
