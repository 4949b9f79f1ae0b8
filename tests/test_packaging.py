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


def test_the_description_names_every_method_the_nodes_offer():
    description = PYPROJECT["project"]["description"]
    assert [m for m in ("SDS", "NFSD", "SDI", "LMC-SDS", "CSD", "ISM", "SDS-Bridge", "ASD", "DDS", "PDS", "3D")
                if m not in description] == []


def test_no_classifier_narrows_the_pack_to_one_accelerator():
    """Pure PyTorch: it runs wherever ComfyUI runs (tested on CPU), so it claims no GPU vendor."""
    assert not [c for c in PYPROJECT["project"]["classifiers"] if c.startswith("Environment :: ")]


def test_the_icon_is_a_square_image_of_this_repository_served_under_its_repository_url():
    """The registry takes a URL (SVG, PNG, JPG or GIF, square, at most 400 px); it names a file that is here."""
    from PIL import Image

    icon, repository = PYPROJECT["tool"]["comfy"]["Icon"], PYPROJECT["project"]["urls"]["Repository"]
    owner_repo = repository.removeprefix("https://github.com/")
    prefix = f"https://raw.githubusercontent.com/{owner_repo}/main/"
    assert icon.startswith(prefix), icon
    path = PACK_ROOT / icon.removeprefix(prefix)
    with Image.open(path) as image:
        assert image.format in {"PNG", "JPEG", "GIF"} and image.width == image.height <= 400


def test_pip_installs_the_core_and_the_runner_but_never_the_nodes_package():
    """`pip install .` needs a package list (the flat layout holds several top-level packages); `nodes` would
    shadow ComfyUI's own top-level module."""
    from fnmatch import fnmatchcase

    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    tops = [d for d in PACK_ROOT.iterdir() if (d / "__init__.py").is_file()]
    packages = {".".join(p.parent.relative_to(PACK_ROOT).parts) for d in tops for p in d.rglob("__init__.py")}
    installed = {p for p in packages if any(fnmatchcase(p, pattern) for pattern in include)}
    assert {"distill", "headless"} <= installed
    assert not {p for p in installed if p.split(".")[0] in {"nodes", "tests", "benchmarks", "corrector_weights"}}


def test_the_console_script_is_the_runners_main():
    import importlib

    module, function = PYPROJECT["project"]["scripts"]["score-distillation-run"].split(":")
    assert getattr(importlib.import_module(module), function) is importlib.import_module("headless.__main__").main


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
