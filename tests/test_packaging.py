"""What ComfyUI-Manager and the Comfy Registry read: requirements.txt and pyproject.toml agree and are complete."""
import re
import tomllib

from comfy_harness import PACK_ROOT

PYPROJECT = tomllib.loads((PACK_ROOT / "pyproject.toml").read_text())


def requirement_lines() -> list[str]:
    lines = (PACK_ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_requirements_txt_lists_exactly_the_pyproject_dependencies():
    assert requirement_lines() == PYPROJECT["project"]["dependencies"]


def test_torch_and_numpy_are_left_to_comfyui():
    names = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower(): r for r in requirement_lines()}
    assert not {"torch", "torchvision", "torchaudio"} & set(names)
    assert names.get("numpy", "numpy") == "numpy"


def test_pyproject_has_what_the_registry_publishes():
    project, comfy = PYPROJECT["project"], PYPROJECT["tool"]["comfy"]
    assert "comfyui" not in project["name"].lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["description"] and (PACK_ROOT / project["license"]["file"]).is_file()
    assert project["urls"]["Repository"].startswith("https://")
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["requires-comfyui"].startswith(">=")
    assert any(c.startswith("Operating System :: ") for c in project["classifiers"])


def imported_modules(path) -> set[str]:
    import ast

    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    return {n.split(".")[0] for n in names}


def test_diffusers_is_a_test_dependency_that_nothing_at_runtime_imports():
    runtime = [PACK_ROOT / "__init__.py"] + [p for folder in ("distill", "nodes", "headless", "corrector_weights")
                                            for p in (PACK_ROOT / folder).rglob("*.py")]
    assert [p.name for p in runtime if "diffusers" in imported_modules(p)] == []
    assert "diffusers" not in requirement_lines()
    assert "diffusers" in PYPROJECT["project"]["optional-dependencies"]["test"]


def test_ci_installs_every_test_dependency():
    ci = (PACK_ROOT / ".ci" / "run").read_text()
    installs = next(line.split() for line in ci.splitlines() if line.startswith("pip -r requirements.txt"))
    assert set(PYPROJECT["project"]["optional-dependencies"]["test"]) <= set(installs)
