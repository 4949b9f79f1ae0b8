"""python -m headless WORKFLOW [--server HOST:PORT] [--set NODE.input=value ...] [--out DIR]

Queues an API-format workflow on a running ComfyUI, shows each node's progress as a terminal bar, stops
the run on the server on Ctrl-C, SIGTERM or SIGHUP, and downloads every file the workflow's output nodes
wrote. Exit status: 0 done, 1 the server refused or failed the prompt (its message is printed), 2 bad
arguments, 128 + the signal's number when stopped (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP).
"""
import argparse
import contextlib
import signal
import sys
from pathlib import Path

from tqdm import tqdm

from .client import Client, ServerError, output_files
from .workflow import WorkflowError, describe, load, set_input


def arguments(argv):
    prog = "python -m headless" if Path(sys.argv[0]).name == "__main__.py" else None  # else the command's name
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[1])
    parser.add_argument("workflow", type=Path,
                        help="an API-format workflow, e.g. example_workflows/api/sds_text_to_image.json")
    parser.add_argument("--server", default="127.0.0.1:8188", help="ComfyUI's HOST:PORT (default 127.0.0.1:8188)")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.input=value",
                        help="change a widget value; NODE is a node id, title or class, "
                             "e.g. --set DistillOptimizeLatent.steps=50")
    parser.add_argument("--out", type=Path, default=Path("output"),
                        help="where outputs are saved (default ./output)")
    return parser.parse_args(argv)


STOP_SIGNALS = [s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s]


class Stopped(BaseException):
    """A stop signal arrived (Ctrl-C, a timeout's or CI's SIGTERM, a closed terminal's SIGHUP). Like
    KeyboardInterrupt it is no Exception, so no library's `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop(signum, frame):
    raise Stopped(signum)


@contextlib.contextmanager
def signals_held():
    """Stop signals wait until the block ends, so that a prompt is never queued without its id being known."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


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
    previous, prompt_id = {s: signal.signal(s, stop) for s in STOP_SIGNALS}, None
    try:
        with signals_held():
            prompt_id = client.queue(prompt)
        print(f"queued prompt {prompt_id} on {client.base}", file=sys.stderr)
        failure = watch(client, prompt, prompt_id)
    except Stopped as e:
        for s, handler in previous.items():  # a second signal while the server is being told ends at once
            signal.signal(s, handler)
        if prompt_id is not None:
            client.interrupt(prompt_id)
            print(f"\nstopped by {e}: asked ComfyUI to stop prompt {prompt_id}", file=sys.stderr)
        return 128 + e.signum
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
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
