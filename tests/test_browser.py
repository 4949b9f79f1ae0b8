"""Every shipped workflow as a user meets it: in ComfyUI's own web frontend (the one the test server
serves), in headless Chromium. Dropped on the canvas it loads with every value of its file and no
warning, is drawn with no node over another, no hidden widget and every wire running rightwards,
turns into its API twin's prompt, and queued from the browser it runs. The template browser shows a
card with a thumbnail for each, titled as the README's gallery."""
import json
import os
import re
import time

import pytest

from browser import Browser, find_chromium
from comfy_harness import PACK_NAME, PACK_ROOT
from frontend import drop, graph, next_frame, open_comfyui, open_dialogs, set_widget
from test_workflows import fast_values, load_build

WORKFLOWS = PACK_ROOT / "example_workflows"
UI = sorted(WORKFLOWS.glob("*.json"))
NAMES = [p.stem for p in UI]
NO_BROWSER = "NO CHROMIUM FOUND (Debian: apt-get install chromium): the browser tests did not run"
BROWSER_CORRECTOR = "browser_test_corrector.safetensors"
JPEG = b"\xff\xd8\xff"

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def page(live_server):
    """The frontend open in Chromium; without Chromium the tests skip loudly, and fail under CI."""
    if find_chromium() is None:
        if os.environ.get("CI"):
            pytest.fail(f"!!! {NO_BROWSER}: CI must run them; .ci/run installs chromium !!!")
        pytest.skip(f"!!! {NO_BROWSER} !!!")
    with Browser() as browser:
        open_comfyui(browser, live_server)
        settle(browser)
        yield browser


def settle(page, quiet: float = 2.0, timeout: float = 60.0) -> None:
    """Wait until the page has logged nothing new for `quiet` seconds: its start-up requests are done."""
    start, count, since = time.time(), len(page.errors), time.time()
    while time.time() - since < quiet and time.time() - start < timeout:
        time.sleep(0.2)
        page.js("1")  # lets the browser's events in
        if len(page.errors) != count:
            count, since = len(page.errors), time.time()


def page_errors(errors: list[str], server) -> list[str]:
    """Console errors but failed requests to other hosts, which only this machine's closed network refuses."""
    return [e for e in errors if not re.search(r"https?://(?!%s)" % re.escape(server.address), e)]


@pytest.fixture(scope="module")
def dropped(page, live_server):
    """What the frontend shows right after a workflow file is dropped on it (each file dropped once)."""
    seen = {}

    def show(name: str) -> dict:
        if name not in seen:
            errors = len(page.errors)
            drop(page, WORKFLOWS / f"{name}.json")
            seen[name] = {"nodes": {n["id"]: n for n in graph(page)}, "dialogs": open_dialogs(page),
                          "prompt": page.js("app.graphToPrompt().then(p => p.output)"),
                          "groups": page.js("app.graph.groups.map(g => [g.title, Array.from(g._bounding)])"),
                          "links": page.js("[...app.graph.links.values()].map(l => [l.origin_id, l.target_id])"),
                          "scale": page.js("app.canvas.ds.scale"),
                          "errors": page_errors(page.errors[errors:], live_server)}
        return seen[name]

    return show


def shipped(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


def twin(name: str) -> dict:
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())


@pytest.mark.parametrize("name", NAMES)
def test_dropped_workflow_opens_without_a_warning_or_console_error(name, dropped):
    shown = dropped(name)
    assert shown["dialogs"] == [], f"{name}: the frontend opened a dialog: {shown['dialogs']}"
    assert shown["errors"] == [], f"{name}: console errors while loading: {shown['errors']}"
    assert {i: n["type"] for i, n in shown["nodes"].items()} == {n["id"]: n["type"] for n in shipped(name)["nodes"]}


@pytest.mark.parametrize("name", NAMES)
def test_dropped_workflow_keeps_every_widget_value_of_its_file(name, dropped):
    """What the frontend holds, saved again, is what the file says: no value shifted to another widget."""
    nodes = dropped(name)["nodes"]
    for n in shipped(name)["nodes"]:
        assert nodes[n["id"]]["widgets_values"] == n["widgets_values"], f"{name}: node {n['id']} {n['type']}"


@pytest.mark.parametrize("name", NAMES)
def test_frontend_prompt_is_the_api_twin(name, dropped):
    """The frontend's own graph-to-prompt, node ids and all, equals example_workflows/api/NAME.json (titles aside,
    and the value of Save GLB's 3D viewer, a widget of the frontend's that it sends and the server ignores)."""
    def without_titles(prompt):
        return {i: {k: v for k, v in n.items() if k != "_meta"} for i, n in prompt.items()}

    sent = dropped(name)["prompt"]
    for n in sent.values():
        if n["class_type"] == "SaveGLB":
            assert n["inputs"].pop("image") == ""
    assert without_titles(sent) == without_titles(twin(name))


def overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def inside(box: list[float], outer: list[float]) -> bool:
    return (outer[0] <= box[0] and box[0] + box[2] <= outer[0] + outer[2]
            and outer[1] <= box[1] and box[1] + box[3] <= outer[1] + outer[3])


@pytest.mark.parametrize("name", NAMES)
def test_workflow_is_drawn_with_no_node_over_another_and_no_widget_hidden(name, dropped):
    shown, sizes = dropped(name), {n["id"]: n["size"] for n in shipped(name)["nodes"]}
    nodes = shown["nodes"].values()
    for n in nodes:
        assert n["size"] == sizes[n["id"]], f"{name}: the frontend resized {n['title']} to show its widgets"
        assert all(s >= m for s, m in zip(n["size"], n["min_size"])), f"{name}: {n['title']} hides widgets"
        assert not n["overflow"], f"{name}: the text of {n['title']} does not fit its box"
    for a in nodes:
        for b in nodes:
            assert a is b or not overlap(a["bounding"], b["bounding"]), f"{name}: {a['title']} overlaps {b['title']}"
    assert shown["scale"] == 1, "the workflow should open at 100% zoom, where its note reads at its size"


@pytest.mark.parametrize("name", NAMES)
def test_workflow_flows_rightwards_through_its_four_groups(name, dropped):
    """Groups prior → loss → optimize → output side by side, each node in one of them, and every wire
    leaving a node's right side for a node further right: data flows left to right."""
    shown = dropped(name)
    groups = shown["groups"]
    titles = [title for title, _ in groups]
    assert titles == [t for t in ("prior", "loss", "optimize", "output") if t in titles] and "prior" in titles
    assert all(a[1][0] + a[1][2] < b[1][0] for a, b in zip(groups, groups[1:])), f"{name}: groups overlap"
    boxes = {i: n["bounding"] for i, n in shown["nodes"].items()}
    for i, n in shown["nodes"].items():
        if n["type"] != "Note":
            assert sum(inside(boxes[i], box) for _, box in groups) == 1, f"{name}: {n['title']} is in no group"
    for origin, target in shown["links"]:
        assert boxes[origin][0] + boxes[origin][2] < boxes[target][0], f"{name}: wire {origin} → {target} runs left"


def history_ids(server) -> set[str]:
    queue = server.get("/queue").json()
    return set(server.get("/history").json()) | {item[1] for part in queue.values() for item in part}


def queue_from_browser(page, server, name: str, values: dict[str, object]) -> dict:
    """Drop the workflow, set widget values (NODE CLASS.input → value) in the browser, press Queue (the
    frontend's own queuePrompt) and return the run's history entry once it has finished."""
    drop(page, WORKFLOWS / f"{name}.json")
    for key, value in values.items():
        class_type, widget = key.split(".")
        for node_id, n in twin(name).items():
            if n["class_type"] == class_type:
                set_widget(page, int(node_id), widget, value)
    before = history_ids(server)
    errors = len(page.errors)
    page.js("app.queuePrompt(0, 1)")
    start = time.time()
    while not (new := history_ids(server) - before):
        assert time.time() - start < 30, f"{name}: nothing was queued; {open_dialogs(page)} {page.errors[errors:]}"
        time.sleep(0.2)
    entry = server.wait(new.pop(), timeout=600)
    assert entry["status"]["status_str"] == "success", f"{name}: {entry['status']}"
    next_frame(page)
    assert page_errors(page.errors[errors:], server) == [], f"{name}: console errors while it ran"
    return entry


def run_values(name: str, server) -> dict[str, object]:
    """Small settings that take every path of the workflow in seconds, and the corrector made in the browser."""
    return fast_values(twin(name)) | {"DistillLMCCorrector.corrector_name": BROWSER_CORRECTOR,
                                      "DistillTrainLMCCorrector.filename": BROWSER_CORRECTOR}


@pytest.fixture(scope="module")
def trained_in_browser(page, live_server) -> dict:
    """train_corrector queued from the browser: the corrector the other LMC workflows then load."""
    return queue_from_browser(page, live_server, "train_corrector", run_values("train_corrector", live_server))


def check_saved_images(name: str, entry: dict) -> None:
    """Every Save Image saved its picture under its own prefix; the optimizer's or the trainer's plot under
    a prefix that says it is a plot, not the result."""
    prompt = twin(name)
    prefixes = []
    for node_id, n in prompt.items():
        if n["class_type"] == "SaveImage":
            prefix, (source, slot) = n["inputs"]["filename_prefix"], n["inputs"]["images"]
            images = entry["outputs"][node_id]["images"]
            assert images and all(f"{i['subfolder']}/{i['filename']}".startswith(prefix) for i in images), images
            if prompt[source]["class_type"] in ("DistillOptimizeLatent", "DistillOptimizeImage") and slot == 1:
                assert prefix.endswith("_loss_plot"), prefix
            if prompt[source]["class_type"] == "DistillTrainLMCCorrector":
                assert prefix.endswith("_fit"), prefix
            prefixes.append(prefix)
    assert len(set(prefixes)) == len(prefixes) > 0, prefixes


def check_saved_meshes(name: str, entry: dict) -> None:
    """Every Save GLB wrote a .glb, which its 3D viewer is pointed at (the node's "3d" output)."""
    for node_id, n in twin(name).items():
        if n["class_type"] == "SaveGLB":
            files = entry["outputs"][node_id]["3d"]
            assert files and all(f["filename"].endswith(".glb") for f in files), files


def test_train_corrector_queued_from_the_browser_runs_and_saves_its_fit(trained_in_browser, live_server):
    check_saved_images("train_corrector", trained_in_browser)
    assert (live_server.base / "models" / "lmc_correctors" / BROWSER_CORRECTOR).is_file()


@pytest.mark.parametrize("name", [n for n in NAMES if n != "train_corrector"])
def test_workflow_queued_from_the_browser_runs(name, page, live_server, trained_in_browser):
    entry = queue_from_browser(page, live_server, name, run_values(name, live_server))
    check_saved_images(name, entry)
    check_saved_meshes(name, entry)


def readme_gallery() -> list[str]:
    """The workflow names the README's gallery shows, in order, each with its screenshot."""
    readme = (PACK_ROOT / "README.md").read_text()
    gallery = readme[readme.index("## Workflows"):].split("\n## ", 1)[0]
    names = re.findall(r"^### `?([\w-]+)`?", gallery, flags=re.M)
    for n in names:
        assert f"](example_workflows/{n}.jpg)" in gallery, f"README gallery: {n} has no screenshot"
    return names


def test_readme_gallery_shows_every_workflow_in_the_order_build_py_describes_them():
    assert readme_gallery() == list(load_build().WORKFLOWS)


def test_template_browser_serves_a_jpeg_thumbnail_beside_every_workflow(live_server):
    assert sorted(live_server.get("/api/workflow_templates").json()[PACK_NAME]) == NAMES
    for name in NAMES:
        r = live_server.get(f"/api/workflow_templates/{PACK_NAME}/{name}.jpg")
        assert r.ok and r.headers["Content-Type"] == "image/jpeg" and r.content[:3] == JPEG, name


def test_template_browser_cards_show_thumbnails_titled_as_the_readme_gallery(page):
    """Workflow → Browse Templates → score_distillation: one card per workflow, its thumbnail loaded, its
    title one of the README gallery's. (This frontend titles a pack's cards by file name and lists them
    in the server's directory order, which no file of the pack can set.)"""
    page.js("app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.wait_for(f"[...document.querySelectorAll('.p-dialog *')].some(e => e.textContent.trim() === '{PACK_NAME}'"
                  " && e.children.length === 0)")
    page.js(f"[...document.querySelectorAll('.p-dialog *')].filter(e => e.children.length === 0"
            f" && e.textContent.trim() === '{PACK_NAME}').forEach(e => e.click())")
    cards = "[...document.querySelectorAll('[data-testid^=\"template-workflow-\"]')]"
    page.wait_for(f"{cards}.length === {len(NAMES)}")
    for i in range(len(NAMES)):  # a card loads its picture while it is scrolled into view
        page.wait_for(f"(c => {{ c.scrollIntoView(); return [...c.querySelectorAll('img')]"
                      f".some(i => i.complete && i.naturalWidth > 0); }})({cards}[{i}])")
    titles = page.js(f"{cards}.map(c => c.innerText.trim().split('\\n')[0])")
    page.js("document.querySelectorAll('.p-dialog-close-button').forEach(b => b.click())")
    assert sorted(titles) == sorted(readme_gallery()) == NAMES


def test_save_glb_carries_comfyuis_3d_viewer(page):
    """text_to_3d's Save GLB has the 3D viewer widget the frontend's Comfy.SaveGLB extension adds (the run queued
    from the browser then gives it the saved .glb: check_saved_meshes)."""
    drop(page, WORKFLOWS / "text_to_3d.json")
    widgets = page.js("app.graph.nodes.find(n => n.type === 'SaveGLB').widgets.map(w => w.name)")
    assert "image" in widgets, widgets
