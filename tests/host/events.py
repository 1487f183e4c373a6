"""The server's websocket messages for one client id: JSON messages, and the binary progress-text frames
(``PromptServer.send_progress_text``: event type 3, then the node id's length, the node id and the text)
as ``{"type": "progress_text", "data": {"node", "text"}}``. Preview images are dropped."""

from __future__ import annotations

import json
import struct
import time
from typing import Any, Iterator

import pytest

PROGRESS_TEXT = 3
ENDS = ("execution_success", "execution_error", "execution_interrupted")


class Events:
    def __init__(self, comfy_server) -> None:
        websocket = pytest.importorskip("websocket", reason="the run tests read the websocket: pip install websocket-client")
        url = comfy_server.base_url.replace("http://", "ws://") + f"/ws?clientId={comfy_server.client_id}"
        self.socket = websocket.create_connection(url, timeout=5)
        self.timeout_error = websocket.WebSocketTimeoutException

    def messages(self, timeout: float) -> Iterator[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                raw = self.socket.recv()
            except self.timeout_error:
                continue
            if isinstance(raw, str):
                yield json.loads(raw)
            elif len(raw) >= 8 and struct.unpack(">I", raw[:4])[0] == PROGRESS_TEXT:
                length = struct.unpack(">I", raw[4:8])[0]
                yield {"type": "progress_text", "data": {"node": raw[8 : 8 + length].decode(), "text": raw[8 + length :].decode()}}
        raise TimeoutError(f"no matching websocket message within {timeout} s")

    def close(self) -> None:
        self.socket.close()


def run_and_collect(comfy_server, prompt: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    """Queue ``prompt`` and return every message until it ends (success, error or interrupt)."""
    events = Events(comfy_server)
    try:
        prompt_id = comfy_server.queue(prompt)
        collected = []
        for message in events.messages(timeout):
            collected.append(message)
            if message["type"] in ENDS and message["data"].get("prompt_id") == prompt_id:
                return collected
    finally:
        events.close()
    raise AssertionError("unreachable")
