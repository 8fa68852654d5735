"""Safety rules for bundle tarballs, shared by the server (upload) and the agent (unpack).

A bundle must be a gzip-compressed tar whose members all stay inside the
unpack root: no absolute paths, no `..`, no links leaving the root, no device
files or fifos, no setuid/setgid bits, at most a configured number of members
and unpacked bytes, and no more than a configured unpacked/compressed ratio
once past a small floor (so a tar or decompression bomb is refused before it
is unpacked, and as soon as it crosses a limit).

`BundleInspector` checks a stream pushed to it chunk by chunk, in time linear
in the unpacked size and in memory bounded by `INFLATE_STEP_BYTES`: it
inflates with `zlib` in fixed steps and walks the tar headers itself, skipping
member data by counting (tarfile's stream reader re-copies its whole
decompressed buffer on every read, which made inspection quadratic).
`InflatingReader` gives tarfile (the agent's unpack) the same bounded,
bomb-checked inflation.

Modules: `limits` (the rules, limits and member budget), `inflate` (bounded,
ratio-checked inflation), `tar_walk` (the header walker), `inspector` (the
chunk-by-chunk check); this package re-exports what callers use.
"""
from swarm_agent.bundle_safety.inflate import (
    INFLATE_STEP_BYTES,
    STREAM_BUFFER_SIZE,
    TAR_STREAM_BUFFER_SIZE,
    Inflater,
    InflatingReader,
)
from swarm_agent.bundle_safety.inspector import BundleInspector, check_tar_stream
from swarm_agent.bundle_safety.limits import (
    BundleLimits,
    BundleRejected,
    BundleSummary,
    MemberBudget,
    check_entry,
    check_member,
)
from swarm_agent.bundle_safety.tar_walk import MAX_EXTENSION_HEADER_BYTES, TarHeaderWalker

__all__ = [
    "INFLATE_STEP_BYTES", "MAX_EXTENSION_HEADER_BYTES", "STREAM_BUFFER_SIZE", "TAR_STREAM_BUFFER_SIZE",
    "BundleInspector", "BundleLimits", "BundleRejected", "BundleSummary", "Inflater", "InflatingReader",
    "MemberBudget", "TarHeaderWalker", "check_entry", "check_member", "check_tar_stream",
]
