"""API-format workflows read from disk and edited from the command line (`--set NODE.input=value`)."""
import json
from pathlib import Path


KINDS = {bool: "true or false", int: "an integer", float: "a number"}


class WorkflowError(ValueError):
    """A workflow file or a --set that cannot be used; the message says which and what to do."""


def load(path: Path) -> dict:
    try:
        prompt = json.loads(path.read_text())
    except FileNotFoundError:
        raise WorkflowError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise WorkflowError(f"{path}: not JSON ({e})") from None
    if "nodes" in prompt and "links" in prompt:
        raise WorkflowError(f"{path} is a UI workflow (drag-and-drop format); the runner needs its API "
                            f"format: example_workflows/api/{path.name}, or in ComfyUI use Export (API)")
    if not prompt or not all(isinstance(n, dict) and "class_type" in n for n in prompt.values()):
        raise WorkflowError(f"{path}: not an API-format workflow (expected {{id: {{class_type, inputs}}}})")
    return prompt


def describe(prompt: dict, node_id: str) -> str:
    """How the terminal names a node: its id and its title, else its class."""
    node = prompt[node_id]
    return f"{node_id} {node.get('_meta', {}).get('title', node['class_type'])}"


def find_node(prompt: dict, name: str) -> str:
    """The id of the one node whose id, title or class is `name`."""
    if name in prompt:
        return name
    matches = [i for i, n in prompt.items() if name in (n.get("_meta", {}).get("title"), n["class_type"])]
    if len(matches) != 1:
        known = ", ".join(describe(prompt, i) + (f" ({n['class_type']})" if "_meta" in n else "")
                          for i, n in prompt.items())
        why = "matches several nodes" if matches else "matches no node"
        raise WorkflowError(f"--set {name}.…: '{name}' {why}; use a node id. Nodes: {known}")
    return matches[0]


def set_input(prompt: dict, assignment: str) -> None:
    """Apply one `NODE.input=value`; the value is read as the type the input already has."""
    target, sep, text = assignment.partition("=")
    name, dot, input_name = target.rpartition(".")
    if not (sep and dot and name and input_name):
        raise WorkflowError(f"--set {assignment}: write NODE.input=value, e.g. --set DistillOptimizeLatent.steps=20")
    node_id = find_node(prompt, name)
    inputs = prompt[node_id]["inputs"]
    if input_name not in inputs:
        raise WorkflowError(f"--set {assignment}: node {describe(prompt, node_id)} has no input '{input_name}'; "
                            f"its inputs: {', '.join(inputs)}")
    current = inputs[input_name]
    if isinstance(current, list):
        raise WorkflowError(f"--set {assignment}: '{input_name}' of node {describe(prompt, node_id)} is wired to "
                            f"node {current[0]}; --set changes widget values only")
    if isinstance(current, str):
        inputs[input_name] = text
        return
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if type(value) is not type(current) and not (isinstance(current, float) and type(value) is int):
        raise WorkflowError(f"--set {assignment}: '{input_name}' of node {describe(prompt, node_id)} takes "
                            f"{KINDS[type(current)]} (now {json.dumps(current)})")
    inputs[input_name] = float(value) if isinstance(current, float) else value
