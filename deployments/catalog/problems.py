"""One problem with one catalog file: where (path and JSON pointer), what, how bad."""
from __future__ import annotations

import re
from dataclasses import dataclass

ERROR = "error"
WARNING = "warning"

_FIELD_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


@dataclass(frozen=True)
class Problem:
    """`error` makes the file's entry invalid (kept by name, never analysed as if it were fine);
    `warning` is reported and the entry imports."""

    path: str
    pointer: str
    message: str
    code: str = "invalid"
    severity: str = ERROR

    def as_dict(self) -> dict:
        return {"path": self.path, "pointer": self.pointer, "message": self.message, "code": self.code,
                "severity": self.severity}

    def __str__(self) -> str:
        return f"{self.path}{'#' + self.pointer if self.pointer else ''}: {self.message}"


def pointer_of(parts) -> str:
    """A JSON pointer (RFC 6901) from path parts: `["a", "b/c", 3]` → `/a/b~1c/3`."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


def pointer_from_field(field: str | None) -> str:
    """The JSON pointer of a field path as `swarm.core.inputs` writes it (`a.b[3].c` → `/a/b/3/c`).

    Keys holding `.` or `[` are split wrongly; the strict loader reports NUL characters and
    nesting depth with such a path, and only those problems go through here.
    """
    if not field:
        return ""
    return pointer_of(index if index else key for index, key in _FIELD_PART.findall(field))
