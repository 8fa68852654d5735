"""`BundleInspector`: a bundle checked chunk by chunk (inflate, walk headers, count), and `check_tar_stream`."""
from __future__ import annotations

from swarm_agent.bundle_safety.inflate import STREAM_BUFFER_SIZE, Inflater
from swarm_agent.bundle_safety.limits import BundleLimits, BundleRejected, BundleSummary, MemberBudget
from swarm_agent.bundle_safety.tar_walk import TarHeaderWalker


class BundleInspector:
    """Inspect a bundle pushed chunk by chunk: `feed()` each chunk, then `finish()`.

    Work is done in `feed()`, on the caller's thread, in time linear in the
    unpacked bytes; the first broken rule raises `BundleRejected` from the
    `feed()` that found it (and again from every later call), so a caller can
    stop reading at once. `abandon()` makes later calls no-ops.
    """

    def __init__(self, limits: BundleLimits):
        self._limits = limits
        self._inflater = Inflater(limits)
        self._budget = MemberBudget(limits)
        self._walker = TarHeaderWalker(self._budget)
        self._error: BundleRejected | None = None
        self._abandoned = False

    @property
    def failed(self) -> BundleRejected | None:
        """The refusal found so far, if any."""
        return self._error

    def feed(self, chunk: bytes) -> None:
        """Check the next chunk of the compressed stream (raises `BundleRejected` at the first broken rule)."""
        if self._error is not None:
            raise self._error
        if self._abandoned:
            return
        try:
            for piece in self._inflater.inflate(chunk):
                if self._abandoned:
                    return
                if not self._walker.ended:
                    self._walker.push(piece)
        except BundleRejected as rejected:
            self._error = rejected
            raise

    def finish(self) -> BundleSummary:
        """The summary of a complete stream, or `BundleRejected`."""
        if self._error is not None:
            raise self._error
        try:
            if self._inflater.compressed == 0:
                raise BundleRejected("not_a_tar_gz", "not a valid gzip-compressed tar archive: the bundle is empty")
            if not self._inflater.ended:
                raise BundleRejected("not_a_tar_gz", "not a valid gzip-compressed tar archive: the gzip stream "
                                                     "is truncated")
            if not (self._walker.ended or self._walker.at_boundary):
                raise BundleRejected("not_a_tar_gz", "not a valid tar archive: it ends inside a member")
            if self._budget.members == 0:
                raise BundleRejected("empty_bundle", "the bundle contains no files")
        except BundleRejected as rejected:
            self._error = rejected
            raise
        return BundleSummary(member_count=self._budget.members, unpacked_size=self._budget.unpacked)

    def abandon(self) -> None:
        """Stop inspecting (the upload failed for another reason)."""
        self._abandoned = True


def check_tar_stream(fileobj, limits: BundleLimits, *, chunk_size: int = STREAM_BUFFER_SIZE) -> BundleSummary:
    """Read a whole tar.gz stream from `fileobj` and check every member."""
    inspector = BundleInspector(limits)
    while True:
        chunk = fileobj.read(chunk_size)
        if not chunk:
            return inspector.finish()
        inspector.feed(chunk)
