"""The ComfyUI server API as the runner uses it: POST /prompt, the websocket's events, /history, /view,
/interrupt. Messages and their order are ComfyUI's (server.py, execution.py, main.py)."""
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import websocket


class ServerError(RuntimeError):
    """The server refused or failed the prompt; the message is the server's own text."""


class Client:
    def __init__(self, server: str):
        self.base = f"http://{server}"
        self.client_id = uuid.uuid4().hex
        try:
            self.ws = websocket.create_connection(f"ws://{server}/ws?clientId={self.client_id}", timeout=10)
        except (OSError, websocket.WebSocketException) as e:
            raise ServerError(f"no ComfyUI answers at {self.base} ({e}); start it (python main.py) or pass "
                              f"--server HOST:PORT") from None
        self.ws.settimeout(None)

    def request(self, path: str, payload: dict | None = None) -> bytes:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.base + path, data, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            raise ServerError(refusal_text(e.read())) from None

    def queue(self, prompt: dict) -> str:
        """POST /prompt; returns the prompt id, or raises with the server's validation errors."""
        return json.loads(self.request("/prompt", {"prompt": prompt, "client_id": self.client_id}))["prompt_id"]

    def events(self, prompt_id: str):
        """The websocket's JSON messages about this prompt, until `executing` with node null (the end)."""
        while True:
            try:
                frame = self.ws.recv()
            except websocket.WebSocketException as e:
                raise ServerError(f"lost the connection to ComfyUI at {self.base} ({e})") from None
            if isinstance(frame, bytes):
                continue  # a binary preview image
            message = json.loads(frame)
            data = message.get("data", {})
            if data.get("prompt_id") != prompt_id:
                continue
            if message["type"] == "executing" and data.get("node") is None:
                return
            yield message["type"], data

    def interrupt(self, prompt_id: str) -> None:
        """Stop the prompt whether it runs (/interrupt) or still waits in the queue (/queue delete)."""
        self.request("/queue", {"delete": [prompt_id]})
        self.request("/interrupt", {"prompt_id": prompt_id})

    def outputs(self, prompt_id: str) -> dict:
        return json.loads(self.request(f"/history/{prompt_id}"))[prompt_id]["outputs"]

    def download(self, file: dict, folder: Path) -> Path:
        """Save one output file ({filename, subfolder, type}) under folder/subfolder."""
        query = urllib.parse.urlencode({k: file[k] for k in ("filename", "subfolder", "type")})
        path = folder / file["subfolder"] / file["filename"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.request(f"/view?{query}"))
        return path

    def close(self) -> None:
        self.ws.close()


def refusal_text(body: bytes) -> str:
    """The text of a 400 from /prompt: the error, then each node's errors."""
    try:
        answer = json.loads(body)
    except json.JSONDecodeError:
        return body.decode(errors="replace")
    error = answer.get("error", {})
    lines = [" ".join(filter(None, [error.get("message"), error.get("details")])) or json.dumps(answer)]
    for node_id, node in answer.get("node_errors", {}).items():
        for e in node["errors"]:
            lines.append(f"  node {node_id} {node['class_type']}: {e['message']}: {e['details']}")
    return "\n".join(lines)


def output_files(outputs: dict):
    """Every file a prompt's output nodes wrote ({filename, subfolder, type} entries), in node order."""
    for node_output in outputs.values():
        for items in node_output.values():
            if isinstance(items, list):
                yield from (i for i in items if isinstance(i, dict) and "filename" in i)
