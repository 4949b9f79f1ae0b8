"""The shipped workflows: generated from one description, and consistent with what the server declares."""
import importlib.util
import json

import pytest

from comfy_harness import COMFYUI, PACK_ROOT, SKIP_REASON, Server

WORKFLOWS = PACK_ROOT / "workflows"
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
        assert json.loads(path.read_text()) == json.loads(rebuilt.read_text()), f"{path.name}: run workflows/build.py"


def test_every_ui_workflow_explains_itself_in_a_note():
    for path in UI:
        notes = [n for n in json.loads(path.read_text())["nodes"] if n["type"] == "Note"]
        assert notes and len(notes[0]["widgets_values"][0]) > 80, path.name


def is_widget(spec) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


@pytest.fixture(scope="module")
def object_info(tmp_path_factory):
    if COMFYUI is None:
        pytest.skip(SKIP_REASON)
    server = Server(tmp_path_factory.mktemp("comfyui"))
    try:
        yield server.get("/object_info").json()
    finally:
        server.stop()


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
        controls = sum(1 for name in widgets if declared[name][1:] and declared[name][1].get("control_after_generate"))
        assert len(n["widgets_values"]) == len(widgets) + controls, (path.name, n["type"])
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
