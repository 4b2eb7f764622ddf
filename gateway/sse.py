"""Server-sent events: framing one event, and cutting a byte stream into whole events."""

from __future__ import annotations

DONE_DATA = b"[DONE]"


def frame(data: bytes) -> bytes:
    """One SSE event carrying ``data`` (a JSON document)."""
    return b"data: " + data + b"\n\n"


# The last event of an OpenAI stream.
DONE = frame(DONE_DATA)


def complete_events(buffer: bytearray, chunk: bytes) -> bytes:
    """Append a network chunk; return the complete SSE events at its front as one block.

    Forwarding blocks rather than single events keeps per-event Python work off streams:
    most chunks are whole events already and pass through as they came.
    """
    if b"\r" in chunk:
        chunk = chunk.replace(b"\r\n", b"\n")
    if buffer:
        buffer += chunk
        data = bytes(buffer)
        buffer.clear()
    else:
        data = chunk
    cut = data.rfind(b"\n\n") + 2
    if cut < 2:
        buffer += data
        return b""
    if cut < len(data):
        buffer += data[cut:]
        return data[:cut]
    return data


def split_block(block: bytes) -> list[bytes]:
    """The events of a block of complete SSE events, each ending with a blank line."""
    return [part + b"\n\n" for part in block.split(b"\n\n")[:-1]]


def data_of(event: bytes) -> bytes | None:
    """The `data:` payload of one event (None for comments and keep-alives)."""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            return line[5:].strip()
    return None
