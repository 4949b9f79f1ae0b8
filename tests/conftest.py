import sys
from pathlib import Path

import pytest

# Appended, never prepended: the core package becomes importable as `distill` without letting the
# pack's `nodes/` shadow ComfyUI's top-level `nodes` module in the ComfyUI tests.
sys.path.append(str(Path(__file__).resolve().parents[1]))

from comfy_harness import COMFYUI, SKIP_REASON  # noqa: E402


def pytest_report_header(config):
    return f"ComfyUI: {COMFYUI}" if COMFYUI else f"!!! {SKIP_REASON} !!!"


def pytest_terminal_summary(terminalreporter):
    if COMFYUI is None:
        terminalreporter.write_line(f"!!! {SKIP_REASON} !!!", red=True, bold=True)


@pytest.fixture(scope="session")
def comfy():
    """ComfyUI's `nodes` module with the pack loaded from custom_nodes; skips loudly without ComfyUI."""
    if COMFYUI is None:
        pytest.skip(SKIP_REASON)
    from comfy_harness import load_comfyui

    return load_comfyui()
