"""Where the tests and .ci/run look for ComfyUI, and that under CI a missing ComfyUI fails instead of skipping."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from comfy_harness import PACK_ROOT, find_comfyui


def fake_comfyui(folder: Path) -> Path:
    (folder / "comfy").mkdir(parents=True)
    (folder / "main.py").write_text("")
    (folder / "comfy" / "samplers.py").write_text("")
    return folder


def clean_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_PATH", "CI")}
    return env | {"HOME": str(home)}


def test_comfyui_is_found_by_path_then_custom_nodes_then_shared_then_home(tmp_path, monkeypatch):
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    pack = tmp_path / "work" / "pack"
    pack.mkdir(parents=True)
    assert find_comfyui(pack) is None
    home = fake_comfyui(tmp_path / "home" / "comfy" / "ComfyUI")
    assert find_comfyui(pack) == home.resolve()
    shared = fake_comfyui(tmp_path / "work" / "shared" / "ComfyUI")
    assert find_comfyui(pack) == shared.resolve()
    installed = fake_comfyui(tmp_path / "ComfyUI")
    fake_comfyui(installed / "custom_nodes" / "shared" / "ComfyUI")
    assert find_comfyui(installed / "custom_nodes" / "pack") == installed.resolve()
    explicit = fake_comfyui(tmp_path / "elsewhere")
    monkeypatch.setenv("COMFYUI_PATH", str(explicit))
    assert find_comfyui(pack) == explicit.resolve()


def pack_copy(tmp_path: Path) -> Path:
    """The repository's tracked test and CI files in a folder with no ComfyUI beside it."""
    pack = tmp_path / "lonely" / "pack"
    shutil.copytree(PACK_ROOT / "tests", pack / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(PACK_ROOT / ".ci", pack / ".ci")
    return pack


def test_ci_run_fails_under_ci_when_no_comfyui_is_found(tmp_path):
    pack = pack_copy(tmp_path)
    env = clean_env(tmp_path / "home") | {"CI": "true"}
    result = subprocess.run(["bash", ".ci/run"], cwd=pack, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "NO COMFYUI FOUND" in result.stderr and "CI is set" in result.stderr
    assert not (pack / ".venv").exists()  # it stops before installing anything


def test_comfyui_tests_fail_under_ci_and_skip_loudly_without_it(tmp_path):
    pack = pack_copy(tmp_path)
    command = [sys.executable, "-m", "pytest", "tests/test_comfyui_server.py", "-q", "-p", "no:cacheprovider"]
    outside_ci = subprocess.run(command, cwd=pack, env=clean_env(tmp_path / "home"), capture_output=True,
                                text=True, timeout=120)
    assert outside_ci.returncode == 0 and "skipped" in outside_ci.stdout and "NO COMFYUI FOUND" in outside_ci.stdout
    in_ci = subprocess.run(command, cwd=pack, env=clean_env(tmp_path / "home") | {"CI": "true"},
                           capture_output=True, text=True, timeout=120)
    assert in_ci.returncode == 1 and "CI is set but NO COMFYUI FOUND" in in_ci.stdout
    assert "skipped" not in in_ci.stdout.splitlines()[-1]
