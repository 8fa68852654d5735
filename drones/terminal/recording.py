"""Terminal recordings: asciinema v2 casts, written as the session runs, stored content-addressed in the bundle store.

A cast is a JSON header line (`{"version": 2, "width", "height",
"timestamp", "title", "env"}`) followed by one JSON array per event:
`[seconds since start, "o", text]` for output and `[t, "r", "COLSxROWS"]`
for a resize (https://docs.asciinema.org/manual/asciicast/v2/). Keystrokes
are not recorded (passwords typed at a prompt are not echoed, and should not
be stored either); what the terminal showed is.

The recorder spools to a local file through the blob store's writer while it
hashes, and on `finish()` publishes the file under
`recordings/sha256/<aa>/<hex>.cast` — the same bytes are stored once.
"""
from __future__ import annotations

import codecs
import hashlib
import json
import re
import time

from bundles.blobstore import BlobStore

RECORDING_PREFIX = "recordings/sha256/"
RECORDING_KEY = re.compile(r"^[0-9a-f]{64}$")


def recording_key(sha256: str) -> str:
    """Where the cast with this digest lives in the bundle store."""
    if not RECORDING_KEY.match(sha256 or ""):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return f"{RECORDING_PREFIX}{sha256[:2]}/{sha256}.cast"


class CastRecorder:
    """Writes one session's cast; `finish()` stores it and returns (sha256, size)."""

    def __init__(self, *, cols: int, rows: int, title: str, max_bytes: int, store: BlobStore | None = None):
        self.store = store or BlobStore()
        self.writer = self.store.writer(known_key=None)
        self.digest = hashlib.sha256()
        self.size = 0
        self.max_bytes = max_bytes
        self.started = time.monotonic()
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.finished: tuple[str, int] | None = None
        self._line({"version": 2, "width": cols, "height": rows, "timestamp": int(time.time()), "title": title,
                    "env": {"TERM": "xterm-256color"}})

    @property
    def full(self) -> bool:
        """Past the size limit: the session must end (a recording is never silently cut)."""
        return self.size >= self.max_bytes

    def _line(self, value) -> None:
        data = (json.dumps(value, ensure_ascii=False) + "\n").encode()
        self.writer.write(data)
        self.digest.update(data)
        self.size += len(data)

    def _elapsed(self) -> float:
        return round(time.monotonic() - self.started, 6)

    def output(self, data: bytes) -> None:
        text = self.decoder.decode(data)
        if text:
            self._line([self._elapsed(), "o", text])

    def resize(self, cols: int, rows: int) -> None:
        self._line([self._elapsed(), "r", f"{cols}x{rows}"])

    def finish(self) -> tuple[str, int]:
        """Publish the cast in the bundle store (idempotent); returns (sha256, size in bytes)."""
        if self.finished is None:
            tail = self.decoder.decode(b"", final=True)
            if tail:
                self._line([self._elapsed(), "o", tail])
            sha256 = self.digest.hexdigest()
            self.writer.commit(recording_key(sha256))
            self.finished = (sha256, self.size)
        return self.finished

    def abort(self) -> None:
        if self.finished is None:
            self.writer.abort()
