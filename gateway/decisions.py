"""Decision records: why each request went where it went, written off the critical path.

`DecisionLog.write(record)` only appends to an in-memory queue (no I/O, no serialising);
a background thread flushes the queue every `flush_s` to rotating JSONL files and/or a
bounded Redis stream (`XADD ... MAXLEN ~ N`). Prompts are never part of a record.

Files: `DIR/decisions-<UTC start>-<pid>-<n>.jsonl`, one per worker at a time, rotated
once it reaches `rotate_bytes` (passing it by at most one flush) or `rotate_s` of age;
the oldest beyond `keep_files`, and any older than `retain_s`, are deleted.
Redis: one stream entry per record, the record's fields as the entry's fields (strings
as they are, numbers and lists as JSON, a null score left out).
"""

from __future__ import annotations

import logging
import operator
import os
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any

import orjson

log = logging.getLogger("gateway.decisions")

FILE_PREFIX = "decisions-"
DEFAULT_STREAM = "gateway:decisions"
_REDIS_CHUNK = 500  # records per round trip


@dataclass(kw_only=True)  # no __slots__: orjson serialises a plain dataclass faster
class DecisionRecord:
    """One request's routing decision (the decision-record contract, field for field)."""

    ts: float  # epoch seconds
    request_id: str
    team: str
    model: str  # as the client asked
    endpoint: str
    score: float | None
    backend: str
    tier: str
    reason: str
    fallbacks: Sequence[str] = ()  # backends tried and failed before `backend`, in order
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    reference_cost_usd: float
    cache: str  # hit | miss | bypass
    status: int
    latency_ms: float
    policy_version: str
    classifier_version: str
    # The caller's key: an API key's id (`key_...`) or where the policy declares it
    # (`search.keys[0]`); never the key or a hash of it. "" without a key (added after the
    # first contract: readers of older records see it absent).
    key_id: str = ""


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(DecisionRecord))
_TEXT_FIELDS = frozenset(f.name for f in fields(DecisionRecord) if f.type == "str")


def _stream_value(name: str, value: Any) -> bytes:
    return value.encode() if name in _TEXT_FIELDS else orjson.dumps(value)


def to_stream_fields(record: DecisionRecord) -> dict[str, str]:
    """A record as Redis stream entry fields."""
    return {
        name: _stream_value(name, value).decode()
        for name in FIELDS
        if (value := getattr(record, name)) is not None
    }


class _XAdd:
    """`XADD stream MAXLEN ~ n * field value ...` as RESP bytes, built without redis-py.

    redis-py packs each argument in Python (~100 µs a record); here the constant parts
    are encoded once, the values read in one call and each formatted once (~6 µs).
    """

    def __init__(self, stream: str, max_len: int) -> None:
        head = [b"XADD", stream.encode(), b"MAXLEN", b"~", str(max_len).encode(), b"*"]
        self.head = b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in head)
        self.heads = len(head)
        self.fields = [(b"$%d\r\n%s\r\n" % (len(n), n.encode()), n in _TEXT_FIELDS) for n in FIELDS]
        self.values = operator.attrgetter(*FIELDS)

    def __call__(self, record: DecisionRecord) -> bytes:
        parts: list[bytes] = []
        for (name, text), value in zip(self.fields, self.values(record), strict=True):
            if value is not None:
                data = value.encode() if text else orjson.dumps(value)
                parts.append(b"%s$%d\r\n%s\r\n" % (name, len(data), data))
        return b"*%d\r\n%s%s" % (self.heads + 2 * len(parts), self.head, b"".join(parts))


def from_stream_fields(entry: Mapping[Any, Any]) -> dict[str, Any]:
    """Redis stream entry fields back as the record's JSON object (contract field order)."""
    raw = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in entry.items()}
    out: dict[str, Any] = {}
    for name in FIELDS:
        value = raw.get(name)
        if value is None:
            if name == "score":
                out[name] = None
            continue
        text = value.decode() if isinstance(value, bytes) else str(value)
        out[name] = text if name in _TEXT_FIELDS else orjson.loads(text)
    return out


class DecisionLog:
    """Buffers decision records and writes them from a background thread."""

    def __init__(
        self,
        directory: Path | None = None,
        *,
        redis_url: str | None = None,
        stream: str = DEFAULT_STREAM,
        stream_max_len: int = 1_000_000,
        rotate_bytes: int = 64 * 1024 * 1024,
        rotate_s: float = 3600.0,
        keep_files: int = 48,
        retain_s: float = 7 * 86400.0,
        flush_s: float = 0.5,
        max_buffer: int = 100_000,
        redis_timeout_s: float = 1.0,
    ) -> None:
        if directory is None and not redis_url:
            raise ValueError("a decision log needs a directory, a Redis URL or both")
        self.directory = directory
        self.stream = stream
        self.stream_max_len = stream_max_len
        self.rotate_bytes = rotate_bytes
        self.rotate_s = rotate_s
        self.keep_files = keep_files
        self.retain_s = retain_s
        self.max_buffer = max_buffer
        # Counters for metrics: records dropped (queue full) and failed flushes.
        self.dropped = 0
        self.errors = 0
        self._queue: deque[DecisionRecord] = deque()
        self._file: IO[bytes] | None = None
        self._file_path: Path | None = None
        self._file_bytes = 0
        self._file_opened = 0.0
        self._sequence = 0
        self._last_error_log = 0.0
        self._redis: Any = None
        self._xadd = _XAdd(stream, stream_max_len)
        if redis_url:
            import redis

            self._redis = redis.Redis.from_url(
                redis_url, socket_timeout=redis_timeout_s, socket_connect_timeout=redis_timeout_s
            )
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        self._flush_s = flush_s
        self._lock = threading.Lock()  # one flush at a time (thread, close, tests)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    def write(self, record: DecisionRecord) -> None:
        """Queue one record; never blocks, never raises (a full queue drops and counts)."""
        if len(self._queue) < self.max_buffer:
            self._queue.append(record)
        else:
            self.dropped += 1

    def flush(self) -> int:
        """Write out what is queued now; returns how many records were taken."""
        with self._lock:
            queue = self._queue
            batch = [queue.popleft() for _ in range(len(queue))]
            if not batch:
                return 0
            if self.directory is not None:
                self._guard("file", self._write_file, batch)
            if self._redis is not None:
                self._guard("redis", self._write_redis, batch)
            return len(batch)

    def close(self) -> None:
        """Flush what is left, stop the thread and close the file and Redis client."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            if self._redis is not None:
                self._redis.close()

    def _run(self) -> None:
        while not self._stop.wait(self._flush_s):
            self.flush()

    def _guard(self, sink: str, write: Any, batch: list[DecisionRecord]) -> None:
        try:
            write(batch)
        except Exception as exc:  # the log must never take the gateway down
            self.errors += 1
            now = time.monotonic()
            if now - self._last_error_log > 60:
                self._last_error_log = now
                log.warning(
                    "decision records lost",
                    extra={"sink": sink, "n": len(batch), "error": repr(exc)},
                )

    def _write_redis(self, batch: list[DecisionRecord]) -> None:
        pool = self._redis.connection_pool
        conn = pool.get_connection()
        try:
            for start in range(0, len(batch), _REDIS_CHUNK):  # each round trip well in time
                chunk = batch[start : start + _REDIS_CHUNK]
                conn.send_packed_command([b"".join(map(self._xadd, chunk))])
                for _ in chunk:
                    conn.read_response()
        except BaseException:
            conn.disconnect()  # replies may be left unread: never reuse this connection
            raise
        finally:
            pool.release(conn)

    def _write_file(self, batch: list[DecisionRecord]) -> None:
        # One record at a time into the file's buffer: joining a whole batch first keeps
        # every serialised line alive at once, which costs several times more.
        handle = self._current_file()
        write, dumps, size = handle.write, orjson.dumps, 0
        for record in batch:
            size += write(dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        handle.flush()
        self._file_bytes += size

    def _current_file(self) -> IO[bytes]:
        handle = self._file
        if handle is not None:
            full = self._file_bytes >= self.rotate_bytes
            old = time.monotonic() - self._file_opened >= self.rotate_s
            gone = os.fstat(handle.fileno()).st_nlink == 0  # deleted under us: start anew
            if not (full or old or gone):
                return handle
            handle.close()
            self._file = None
        assert self.directory is not None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        while True:  # names sort in time order: the second, then this worker's sequence
            self._sequence += 1
            path = self.directory / f"{FILE_PREFIX}{stamp}-{os.getpid()}-{self._sequence:04d}.jsonl"
            if not path.exists():
                break
        self._file = handle = path.open("ab")
        self._file_path = path
        self._file_bytes = path.stat().st_size
        self._file_opened = time.monotonic()
        self._prune()
        return handle

    def _prune(self) -> None:
        assert self.directory is not None
        files = sorted(self.directory.glob(f"{FILE_PREFIX}*.jsonl"))
        now = time.time()
        # A file written in the last few seconds may be another worker's open file.
        busy = max(5.0, self._flush_s * 4)
        for i, path in enumerate(files):
            if path == self._file_path:
                continue
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue
            surplus = i < len(files) - self.keep_files
            if age > busy and (surplus or age > self.retain_s):
                path.unlink(missing_ok=True)
