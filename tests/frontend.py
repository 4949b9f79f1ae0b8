"""ComfyUI's web frontend in a Browser: open it on a server, drop a workflow file on its canvas, read
what it drew."""
import json
from pathlib import Path

from browser import Browser

# Settings a new user would dismiss or that only decorate: no template dialog at start.
QUIET = {"Comfy.TutorialCompleted": True}

APP_READY = ("window.app?.graph && window.app.canvas && LiteGraph.registered_node_types['DistillSDSLoss'] "
             "&& document.querySelector('#graph-canvas') ? true : false")

# Per node as drawn after a load: its box with title [x, y, w, h], its size, the smallest size that shows
# all its widgets, its serialized widget values, and for text widgets whether their text overflows.
GRAPH = """(() => app.graph.nodes.map(n => ({
  id: n.id, type: n.type, title: n.title, bounding: Array.from(n.getBounding()), size: Array.from(n.size),
  min_size: Array.from(n.computeSize()), widgets_values: n.serialize().widgets_values ?? [],
  overflow: (n.widgets ?? []).filter(w => w.element?.tagName === 'TEXTAREA')
                             .some(w => w.element.scrollHeight > w.element.clientHeight + 1),
})))()"""


def open_comfyui(browser: Browser, server, settings: dict = QUIET) -> None:
    """The frontend of `server` (comfy_harness.Server) with the pack's nodes registered."""
    for key, value in settings.items():
        r = server.post(f"/api/settings/{key}", value)
        assert r.ok, r.text
    browser.goto(server.url)
    browser.wait_for(APP_READY, timeout=300)


def drop(browser: Browser, path: Path, timeout: float = 60.0) -> None:
    """Drop the file on the canvas as a user does (the frontend's own drop handler reads it) and wait
    until it is open in a new workflow tab with all its nodes."""
    workflow = json.loads(path.read_text())
    browser.js("""(() => {
      window.distillBefore = app.extensionManager.workflow.activeWorkflow;
      const data = new DataTransfer();
      data.items.add(new File([%s], %s, {type: 'application/json'}));
      document.querySelector('#graph-canvas').dispatchEvent(
        new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true}));
    })()""" % (json.dumps(path.read_text()), json.dumps(path.name)))
    ids = json.dumps(sorted(n["id"] for n in workflow["nodes"]), separators=(",", ":"))
    browser.wait_for("app.extensionManager.workflow.activeWorkflow !== window.distillBefore && "
                     f"JSON.stringify(app.graph.nodes.map(n => n.id).sort((a, b) => a - b)) === '{ids}'", timeout)
    next_frame(browser)


def next_frame(browser: Browser) -> None:
    """Wait until the frontend has drawn twice, so that what it draws reflects what it holds."""
    browser.js("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def open_dialogs(browser: Browser) -> list[str]:
    return browser.js("[...document.querySelectorAll('.p-dialog')].map(d => d.innerText.slice(0, 500))")


def graph(browser: Browser) -> list[dict]:
    return browser.js(GRAPH)


def set_widget(browser: Browser, node_id: int, name: str, value) -> None:
    found = browser.js("""(() => {
      const w = app.graph.getNodeById(%d)?.widgets?.find(w => w.name === %s);
      if (w) w.value = %s;
      return !!w;
    })()""" % (node_id, json.dumps(name), json.dumps(value)))
    assert found, f"node {node_id} has no widget {name}"
