"""Pictures every shipped workflow as ComfyUI's frontend draws it, in headless Chromium, and saves it
next to the workflow as NAME.jpg: the template browser's thumbnail, and the README's screenshot.

    COMFYUI_PATH=/path/to/ComfyUI python example_workflows/screenshots.py            # writes example_workflows/*.jpg
    COMFYUI_PATH=/path/to/ComfyUI python example_workflows/screenshots.py --measure  # sizes for build.py

It starts a ComfyUI server with this pack alone (a free port, a temporary base directory) and needs
Debian's chromium. --measure prints instead the smallest size the frontend draws each node type at,
with the widgets it has in the workflows, next to the size build.py gives it.
"""
import argparse
import io
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent / "tests"))

from browser import Browser  # noqa: E402
from comfy_harness import COMFYUI, SKIP_REASON, Server  # noqa: E402
from frontend import QUIET, drop, graph, open_comfyui  # noqa: E402

WIDTH = 1600  # of the saved picture
MARGIN = 40  # canvas pixels around the graph
# Only the graph: no minimap, no canvas statistics, and the menus hidden.
SETTINGS = QUIET | {"Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasInfo": False}
CHROME = ".comfyui-body-top, .comfyui-body-left, .splitter-overlay-root > :not(.p-splitterpanel) " \
         "{ display: none !important; } .p-splitterpanel > * { visibility: hidden; }"


def example_image(path: Path) -> None:
    """A soft gradient for the editing workflows' Load Image to show."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:384, 0:512] / np.array([384.0, 512.0])[:, None, None]
    rgb = np.stack([0.55 + 0.35 * x, 0.45 + 0.25 * y, 0.65 - 0.3 * x * y], -1)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(path)


def bounds(browser: Browser) -> list[float]:
    """[left, top, right, bottom] of every node (with its title) and group, in canvas pixels."""
    return browser.js("""(() => {
      const boxes = [...app.graph.nodes.map(n => Array.from(n.getBounding())),
                     ...app.graph.groups.map(g => Array.from(g._bounding ?? g.bounding))];
      return [Math.min(...boxes.map(b => b[0])), Math.min(...boxes.map(b => b[1])),
              Math.max(...boxes.map(b => b[0] + b[2])), Math.max(...boxes.map(b => b[1] + b[3]))];
    })()""")


def picture(browser: Browser, path: Path, out: Path) -> None:
    """Drop the workflow, show all of it at 100% in a viewport its size, save it WIDTH wide."""
    from PIL import Image

    drop(browser, path)
    left, top, right, bottom = bounds(browser)
    width, height = int(right - left + 2 * MARGIN), int(bottom - top + 2 * MARGIN)
    browser.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
    browser.wait_for(f"document.querySelector('#graph-canvas').clientWidth === {width}")
    browser.js(f"""(() => {{
      app.canvas.ds.scale = 1;
      app.canvas.ds.offset = [{MARGIN - left}, {MARGIN - top}];
      app.canvas.setDirty(true, true);
      app.canvas.draw(true, true);
    }})()""")
    browser.js("new Promise(r => setTimeout(() => requestAnimationFrame(() => requestAnimationFrame(r)), 500))")
    image = Image.open(io.BytesIO(browser.screenshot(quality=95))).convert("RGB")
    image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.LANCZOS)
    image.save(out, quality=85, optimize=True, progressive=True)


def measure(browser: Browser, paths: list[Path]) -> None:
    drawn, given = {}, {}
    for path in paths:
        drop(browser, path)
        for n, shipped in zip(graph(browser), json.loads(path.read_text())["nodes"]):
            drawn.setdefault(n["type"], []).append(n["min_size"])
            given.setdefault(n["type"], []).append(shipped["size"])
    for type_ in sorted(drawn):
        (w, h), (gw, gh) = ([max(s[i] for s in sizes) for i in (0, 1)] for sizes in (drawn[type_], given[type_]))
        print(f"{type_:28} drawn at least {w:4.0f} x {h:4.0f}, build.py gives up to {gw} x {gh}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measure", action="store_true", help="print each node type's smallest size instead")
    parser.add_argument("names", nargs="*", help="workflow names (default: all)")
    args = parser.parse_args()
    if COMFYUI is None:
        sys.exit(SKIP_REASON)
    paths = [HERE / f"{n}.json" for n in args.names] or sorted(HERE.glob("*.json"))
    with tempfile.TemporaryDirectory(prefix="distill_screenshots_") as tmp:
        base = Path(tmp)
        (base / "input").mkdir()
        example_image(base / "input" / "example.png")
        server = Server(base)
        try:
            with Browser() as browser:
                open_comfyui(browser, server, SETTINGS)
                browser.js(f"document.head.appendChild(Object.assign(document.createElement('style'), "
                           f"{{textContent: {CHROME!r}}}))")
                if args.measure:
                    return measure(browser, paths)
                for path in paths:
                    picture(browser, path, path.with_suffix(".jpg"))
                    print(f"wrote {path.with_suffix('.jpg').relative_to(HERE.parent)}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
