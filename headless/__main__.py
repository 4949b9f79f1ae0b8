"""python -m headless WORKFLOW [--server HOST:PORT] [--set NODE.input=value ...] [--out DIR]

Queues an API-format workflow on a running ComfyUI, shows each node's progress as a terminal bar, stops
the run on Ctrl-C, and downloads every file the workflow's output nodes wrote. Exit status: 0 done,
1 the server refused or failed the prompt (its message is printed), 2 bad arguments, 130 interrupted.
"""
import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from .client import Client, ServerError, output_files
from .workflow import WorkflowError, describe, load, set_input


def arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m headless", description=__doc__.split("\n\n")[1])
    parser.add_argument("workflow", type=Path,
                        help="an API-format workflow, e.g. example_workflows/api/sds_text_to_image.json")
    parser.add_argument("--server", default="127.0.0.1:8188", help="ComfyUI's HOST:PORT (default 127.0.0.1:8188)")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.input=value",
                        help="change a widget value; NODE is a node id, title or class, "
                             "e.g. --set DistillOptimizeLatent.steps=50")
    parser.add_argument("--out", type=Path, default=Path("output"),
                        help="where outputs are saved (default ./output)")
    return parser.parse_args(argv)


class NodeBar:
    """One terminal bar at a time: a new one for each node, and for each phase of a node (a new total)."""

    def __init__(self):
        self.bar = None

    def show(self, label: str, value: int, total: int) -> None:
        if self.bar is not None and (self.bar.desc != label or self.bar.total != total or value < self.bar.n):
            self.close()
        if self.bar is None:
            self.bar = tqdm(total=total, desc=label, unit="step", file=sys.stderr)
        self.bar.update(value - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def watch(client: Client, prompt: dict, prompt_id: str) -> str | None:
    """Follow the prompt to its end; returns the server's failure text, or None when it succeeded."""
    bar, failure = NodeBar(), None
    try:
        for kind, data in client.events(prompt_id):
            node = data.get("node") or data.get("node_id")
            label = describe(prompt, node) if node in prompt else node
            if kind == "executing":
                bar.close()
                print(f"running {label}", file=sys.stderr)
            elif kind == "progress":
                bar.show(label, data["value"], data["max"])
            elif kind == "execution_error":
                failure = (f"node {label} failed: {data['exception_type']}: {data['exception_message'].strip()}\n"
                           f"(the traceback is in the ComfyUI console)")
            elif kind == "execution_interrupted":
                failure = f"interrupted on the server while running node {label}"
    finally:
        bar.close()
    return failure


def run(client: Client, prompt: dict, out: Path) -> int:
    prompt_id = client.queue(prompt)
    print(f"queued prompt {prompt_id} on {client.base}", file=sys.stderr)
    try:
        failure = watch(client, prompt, prompt_id)
    except KeyboardInterrupt:
        client.interrupt(prompt_id)
        print(f"\ninterrupted: asked ComfyUI to stop prompt {prompt_id}", file=sys.stderr)
        return 130
    if failure:
        raise ServerError(failure)
    for file in output_files(client.outputs(prompt_id)):
        print(f"saved {client.download(file, out)}")
    return 0


def main(argv=None) -> int:
    args = arguments(argv)
    try:
        prompt = load(args.workflow)
        for assignment in args.set:
            set_input(prompt, assignment)
    except WorkflowError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        client = Client(args.server)
        try:
            return run(client, prompt, args.out)
        finally:
            client.close()
    except ServerError as e:
        print(f"ComfyUI: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
