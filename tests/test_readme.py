"""The README's Python example runs as written and does what it says."""
import re
import runpy
from pathlib import Path

import torch

from distill.quality import fidelity

README = Path(__file__).resolve().parents[1] / "README.md"


def python_example() -> str:
    section = README.read_text(encoding="utf-8").split("\n## Use the core from Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section should hold exactly one python block"
    return blocks[0]


def test_readme_python_example_runs_and_moves_noise_onto_images_of_the_prompted_class(tmp_path, capsys):
    script = tmp_path / "readme_example.py"
    script.write_text(python_example(), encoding="utf-8")
    namespace = runpy.run_path(str(script), run_name="readme_example")
    x, start, data = namespace["x"], namespace["start"], namespace["data"]
    assert x.shape == start.shape and torch.isfinite(x).all()
    # From noise 2.6 neighbour distances from every disc onto one disc each (measured 0.07–0.11), and the
    # nearest image of the whole dataset is a disc for every result.
    assert (fidelity(start, data.of("disc")) > 2).all()
    assert (fidelity(x, data.of("disc")) < 0.3).all()
    nearest = torch.cdist(x.flatten(1), data.images.flatten(1)).argmin(1)
    assert (data.labels[nearest] == data.classes.index("disc")).all()
    assert "Scores(fidelity=" in capsys.readouterr().out


def test_the_first_screen_shows_a_result_the_main_job_and_the_test_command_ci_runs():
    first_screen = README.read_text(encoding="utf-8").split("\n## ", 1)[0]
    assert len(first_screen.splitlines()) <= 30
    image = re.search(r"!\[[^\]]+\]\(([^)]+\.png)\)", first_screen).group(1)
    assert (README.parent / image).is_file()
    assert re.search(r"^ {4}python -m headless example_workflows/api/\w+\.json", first_screen, re.M)
    tests = re.findall(r"^ {4}(python -m pytest.*)$", first_screen, re.M)
    ci = (README.parent / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert tests == [ci] == ["python -m pytest tests"]


def test_every_local_link_and_image_of_the_readme_and_docs_exists():
    for page in [README, *sorted((README.parent / "docs").glob("*.md"))]:
        targets = re.findall(r"\]\(([^)#\s]+)\)", page.read_text(encoding="utf-8"))
        missing = [t for t in targets if "://" not in t and not (page.parent / t).exists()]
        assert missing == [], f"{page.name}: {missing}"
