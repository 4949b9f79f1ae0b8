import sys
from pathlib import Path

# Appended, never prepended: the core package becomes importable as `distill` without letting the
# pack's `nodes/` shadow ComfyUI's top-level `nodes` module in the ComfyUI tests.
sys.path.append(str(Path(__file__).resolve().parents[1]))
