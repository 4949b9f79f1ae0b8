import sys
from pathlib import Path

import pytest

# Appended, never prepended: the core package becomes importable as `distill` without letting the
# pack's `nodes/` shadow ComfyUI's top-level `nodes` module in the ComfyUI tests.
sys.path.append(str(Path(__file__).resolve().parents[1]))

from comfy_harness import COMFYUI, IN_CI, SKIP_REASON  # noqa: E402


def pytest_report_header(config):
    return f"ComfyUI: {COMFYUI}" if COMFYUI else f"!!! {SKIP_REASON} !!!"


def pytest_terminal_summary(terminalreporter):
    if COMFYUI is None:
        terminalreporter.write_line(f"!!! {SKIP_REASON} !!!", red=True, bold=True)


@pytest.fixture(scope="session")
def comfy():
    """ComfyUI's `nodes` module with the pack loaded from custom_nodes; skips loudly without ComfyUI, and
    fails under CI (CI set), where a skipped ComfyUI test would make a green run say nothing about the nodes."""
    if COMFYUI is None:
        if IN_CI:
            pytest.fail(f"CI is set but {SKIP_REASON}")
        pytest.skip(SKIP_REASON)
    from comfy_harness import load_comfyui

    return load_comfyui()


@pytest.fixture(scope="session")
def live_server(comfy, tmp_path_factory):
    """A headless ComfyUI with the pack, the test nodes, a tiny SD1.5 checkpoint file under the name the
    shipped workflows load, input/example.png (the image the editing workflows load, its right half painted
    as the masked-editing workflow's mask) and a copy in input/corrector_photos/ (the folder the train_corrector
    runs read). `server.outside` is a folder beside its base directory whose every file access the server logs
    to `server.watch_log`."""
    import json

    import numpy as np
    from PIL import Image

    from comfy_harness import PACK_ROOT, Server, tiny_checkpoint
    from headless.workflow import find_node

    base = tmp_path_factory.mktemp("comfyui")
    outside = tmp_path_factory.mktemp("outside")
    sds = json.loads((PACK_ROOT / "example_workflows/api/sds_text_to_image.json").read_text())
    ckpt_name = sds[find_node(sds, "CheckpointLoaderSimple")]["inputs"]["ckpt_name"]
    checkpoint = base / "models" / "checkpoints" / ckpt_name
    tiny_checkpoint(checkpoint)
    (base / "input").mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (80, 96, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    pixels[:, 48:, 3] = 0  # the MaskEditor's paint: transparent, Load Image's mask 1 there
    Image.fromarray(pixels).save(base / "input" / "example.png")
    (base / "input" / "corrector_photos").mkdir()
    Image.fromarray(pixels).save(base / "input" / "corrector_photos" / "example.png")
    watch_log = base / "watch.log"
    server = Server(base, env={"DISTILL_TEST_WATCH": str(outside), "DISTILL_TEST_WATCH_LOG": str(watch_log)})
    server.outside, server.watch_log = outside, watch_log
    yield server
    server.stop()
    checkpoint.unlink()  # 488 MB; pytest keeps the last three sessions' folders


@pytest.fixture
def corrector_folder(comfy, tmp_path):
    """models/lmc_correctors pointed at a temporary folder for the test."""
    import folder_paths

    from comfy_harness import pack

    name = pack("nodes.correctors").FOLDER
    old = folder_paths.folder_names_and_paths.get(name)
    folder_paths.folder_names_and_paths[name] = ([str(tmp_path)], {".safetensors"})
    yield tmp_path
    folder_paths.folder_names_and_paths[name] = old
