"""What each front door adds on top of chat completions: the same request through
/v1/chat/completions, /v1/messages and /v1/responses, whole and streamed.

One gateway worker (a real `gateway serve` process) in front of the scripted OpenAI upstream
of the tests, cache off; doors interleaved in rounds so machine noise hits them alike; one
client, keep-alive, sequential requests. Prints the median and p90 per door and the median's
difference to chat's. The upstream and client share the machine: compare the differences,
not the absolute numbers. First, the doors' own CPU per request (parse, translate the
request, translate the answer), in-process: the stable part of what a door adds.

    .venv/bin/python bench/doors_latency.py [--requests 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway.doors import (  # noqa: E402
    messages_answer,
    messages_request,
    native,
    responses_answer,
    responses_request,
    responses_stream,
)
from gateway.protocol import parse_body, validate  # noqa: E402
from gateway.providers.native import Watcher  # noqa: E402
from gateway.sse import data_of  # noqa: E402
from gateway.wire import Usage  # noqa: E402
from tests.support.fake_upstreams import FakeUpstream, openai_app, serve_in_thread  # noqa: E402
from tests.support.model_servers import free_port  # noqa: E402

POLICY = """
backends:
  open: {{provider: openai, base_url: "{url}/v1", tier: open}}
models:
  "*": {{to: [open]}}
"""
TEXT = "Summarise the plot of Hamlet in two sentences."
DOORS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": (
        "/v1/chat/completions",
        {"model": "m", "max_tokens": 32, "messages": [{"role": "user", "content": TEXT}]},
    ),
    "messages": (
        "/v1/messages",
        {"model": "m", "max_tokens": 32, "messages": [{"role": "user", "content": TEXT}]},
    ),
    "responses": (
        "/v1/responses",
        {"model": "m", "max_output_tokens": 32, "input": TEXT, "store": False},
    ),
    "responses+store": (
        "/v1/responses",
        {"model": "m", "max_output_tokens": 32, "input": TEXT},
    ),
}


def _chunks() -> list[bytes]:
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"

    usage = {**head, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 20}}
    words = [chunk({"content": f" word{i}"}) for i in range(20)]
    tail = [chunk({}, "stop"), b"data: " + orjson.dumps(usage) + b"\n\n", b"data: [DONE]\n\n"]
    return [chunk({"role": "assistant", "content": ""}), *words, *tail]


def _native_blocks(dialect: str) -> list[bytes]:
    """The same 20-word answer as an Anthropic Messages or a Responses event stream."""

    def ev(kind: str, data: dict[str, Any]) -> bytes:
        return f"event: {kind}\ndata: ".encode() + orjson.dumps({"type": kind, **data}) + b"\n\n"

    words = [f" word{i}" for i in range(20)]
    usage = {"input_tokens": 12, "output_tokens": 20}
    if dialect == "messages":
        message = {"id": "msg_1", "type": "message", "role": "assistant", "content": []}
        text = {"type": "text", "text": ""}
        return [
            ev("message_start", {"message": {**message, "model": "m", "usage": usage}}),
            ev("content_block_start", {"index": 0, "content_block": text}),
            *(ev("content_block_delta", {"index": 0, "delta": {"text": w}}) for w in words),
            ev("content_block_stop", {"index": 0}),
            ev("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": usage}),
            ev("message_stop", {}),
        ]
    item = {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed"}
    done = {**item, "content": [{"type": "output_text", "text": "".join(words)}]}
    response = {"id": "resp_1", "object": "response", "output": [done], "usage": usage}
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    return [
        ev("response.created", {"response": {**response, "output": [], "usage": None}}),
        ev("response.output_item.added", {"output_index": 0, "item": {**item, "content": []}}),
        *(ev("response.output_text.delta", {**where, "delta": w}) for w in words),
        ev("response.output_item.done", {"output_index": 0, "item": done}),
        ev("response.completed", {"response": response}),
    ]


def _per_request_us(work: Any, n: int = 3000) -> float:
    started = time.perf_counter()
    for _ in range(n):
        work()
    return (time.perf_counter() - started) / n * 1e6


def translation_costs() -> None:
    """Microseconds of door work per request, next to chat's own parse and checks."""
    completion = orjson.dumps(
        {
            "id": "chatcmpl-1",
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 20},
        }
    )
    blocks = _chunks()
    raw = {door: orjson.dumps(body) for door, (_, body) in DOORS.items()}

    def chat() -> None:
        validate("chat", parse_body(raw["chat"]))

    def messages(stream: bool) -> None:
        body = parse_body(raw["messages"])
        messages_request.parse_request(body)
        if stream:
            translator = messages_answer.MessageStream("m", [])
            for block in blocks:
                translator.feed(block)
        else:
            orjson.dumps(messages_answer.to_message(orjson.loads(completion), "m", []))

    def responses(stream: bool) -> None:
        body = parse_body(raw["responses"])
        responses_request.parse_request(body, [])
        base = responses_answer.shell(body, "resp_1")
        if stream:
            translator = responses_stream.ResponseStream(base)
            for block in blocks:
                translator.feed(block)
            translator.end()
        else:
            orjson.dumps(responses_answer.to_response(base, orjson.loads(completion))[0])

    anthropic_blocks, responses_blocks = _native_blocks("messages"), _native_blocks("responses")
    message = orjson.dumps({"type": "message", "usage": {"input_tokens": 1, "output_tokens": 2}})

    def messages_native(stream: bool) -> None:
        # The chat view is still built (the classifier reads it); the answer is relayed.
        messages_request.parse_request(parse_body(raw["messages"]))
        if stream:
            watcher = Watcher("messages", Usage())
            for block in anthropic_blocks:
                watcher.feed(block)  # the provider reads usage
                native.gateway_error(block)  # the door relays
        else:
            Usage().update_native(orjson.loads(message).get("usage"))

    def responses_native(stream: bool) -> None:
        body = parse_body(raw["responses"])
        responses_request.parse_request(body, [])
        responses_answer.shell(body, "resp_1")
        if stream:
            watcher = Watcher("responses", Usage())
            for block in responses_blocks:
                watcher.feed(block)
                native.gateway_error(block)
                done = native.finished_response(block)  # what the door stores
                if done is not None:
                    native.history_of(done)
        else:
            native.history_of(orjson.loads(data_of(responses_blocks[-1]) or b"{}")["response"])

    print(f"{'door work, in-process':<32}{'whole us':>10}{'stream us':>11}")
    print(f"{'chat (parse + checks only)':<32}{_per_request_us(chat):>10.1f}{'-':>11}")
    works = [("messages", messages), ("responses", responses)]
    works += [("messages, as is", messages_native), ("responses, as is", responses_native)]
    for name, work in works:
        whole = _per_request_us(lambda w=work: w(False))
        streamed = _per_request_us(lambda w=work: w(True))
        label = name if "as is" in name else name + " (request + answer)"
        print(f"{label:<32}{whole:>10.1f}{streamed:>11.1f}")
    print()


def _wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the gateway exited")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the gateway did not start")


def _timed(client: httpx.Client, path: str, body: dict[str, Any], stream: bool) -> float:
    body = {**body, "stream": True} if stream else body
    started = time.perf_counter()
    if stream:
        with client.stream("POST", path, json=body) as response:
            for _ in response.iter_bytes():
                pass
    else:
        response = client.post(path, json=body)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{path}: HTTP {response.status_code}")
    return elapsed


def main() -> None:
    """Run the comparison and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="per door, per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    translation_costs()
    workdir = Path(tempfile.mkdtemp(prefix="doors-bench-"))
    with serve_in_thread(openai_app(FakeUpstream())) as upstream:
        policy = workdir / "policy.yaml"
        policy.write_text(POLICY.format(url=upstream))
        port = free_port()
        env = {**os.environ, "GATEWAY_REDIS_URL": "", "GATEWAY_ACCESS_LOG": "false"}
        command = [sys.executable, "-m", "gateway", "serve", "--policy", str(policy)]
        command += ["--host", "127.0.0.1", "--port", str(port)]
        with (workdir / "gateway.log").open("wb") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait(url, proc)
            results = _run(url, args.requests, args.rounds)
        finally:
            proc.terminate()
            proc.wait(15)
    _report(results)


def _run(url: str, requests: int, rounds: int) -> dict[tuple[str, bool], list[float]]:
    results: dict[tuple[str, bool], list[float]] = {}
    with httpx.Client(base_url=url, headers={"authorization": "Bearer bench"}) as client:
        for stream in (False, True):
            for path, body in DOORS.values():  # warm up
                for _ in range(20):
                    _timed(client, path, body, stream)
        for _ in range(rounds):
            for stream in (False, True):
                for door, (path, body) in DOORS.items():
                    samples = results.setdefault((door, stream), [])
                    samples += [_timed(client, path, body, stream) for _ in range(requests)]
    return results


def _report(results: dict[tuple[str, bool], list[float]]) -> None:
    print(f"{'door':<18}{'mode':<8}{'median ms':>10}{'p90 ms':>9}{'vs chat ms':>12}")
    for stream in (False, True):
        base = statistics.median(results[("chat", stream)])
        for door in DOORS:
            samples = results[(door, stream)]
            median = statistics.median(samples)
            p90 = statistics.quantiles(samples, n=10)[-1]
            mode = "stream" if stream else "whole"
            delta = (median - base) * 1000
            print(f"{door:<18}{mode:<8}{median * 1000:>10.3f}{p90 * 1000:>9.3f}{delta:>+12.3f}")


if __name__ == "__main__":
    main()
