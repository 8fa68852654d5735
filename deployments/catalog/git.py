"""Cloning a catalog from a git URL and ref into a directory, on the worker (no Django here but settings).

    check_git_source(git_url, ref)                 # before anything is queued: a 400 naming the field
    with checkout(git_url, ref, timeout=120) as (path, commit_sha):
        tree = read_directory(path, limits=...)

The ref may be a branch, a tag or a commit id: it is fetched (`git fetch --depth 1 origin <ref>`) into
a bare repository in one temporary directory and checked out into another, so the tree read has no
`.git` in it. git runs without a terminal prompt, without the user's or the system's config (no
credential helpers, no hooks, no `insteadOf` rewrites), with only the transports the URL's scheme
needs (`GIT_ALLOW_PROTOCOL`: never `ext::`), and is killed after `timeout` seconds.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deployments.errors import CatalogRefused

#: Transports git may use for a catalog; `file` only where the operator allows it (SWARM_CATALOG_GIT_ALLOW_FILE).
NETWORK_PROTOCOLS = "http:https:ssh:git"
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/@+-]{0,199}")
_OUTPUT_LIMIT = 2000


def check_git_source(git_url: str, ref: str, *, allow_file: bool) -> tuple[str, str]:
    """The URL and ref when git may fetch them, else `CatalogRefused` (400) naming the field and the fix."""
    from builds.config import validate_scm_url
    from swarm.core.errors import ApiError

    try:
        url = validate_scm_url(git_url)
    except ApiError as error:
        detail = error.detail.removeprefix("scm_url: ")
        raise CatalogRefused(f"git_url {detail}: give an https://, ssh://, git:// URL (or user@host:path).",
                             code="invalid_git_url", field="git_url", status_code=400) from None
    if url.startswith(("file://", "/")) and not allow_file:
        raise CatalogRefused("git_url: a file:// or path URL would read the control plane's own disk; give the "
                             "repository's https:// or ssh:// URL (SWARM_CATALOG_GIT_ALLOW_FILE allows local "
                             "repositories).", code="invalid_git_url", field="git_url", status_code=400)
    if url.startswith("-") or len(url) > 500:
        raise CatalogRefused("git_url is not a repository URL.", code="invalid_git_url", field="git_url",
                             status_code=400)
    if not isinstance(ref, str) or not _REF.fullmatch(ref) or ".." in ref or ref.endswith((".lock", "/", ".")):
        raise CatalogRefused(f"ref {ref!r} is not a branch, tag or commit id git accepts (letters, digits and "
                             "._/@+-, not starting with - or ., at most 200 characters).", code="invalid_ref",
                             field="ref", status_code=400)
    return url, ref


def _git(args: list[str], *, env: dict, timeout: float, what: str) -> str:
    try:
        done = subprocess.run(["git", *args], env=env, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise CatalogRefused(f"git {what} took longer than {timeout:g} s and was stopped; check that the "
                             "repository answers (or raise SWARM_CATALOG_GIT_TIMEOUT_SECONDS).",
                             code="git_timeout", field="git_url") from None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()[-_OUTPUT_LIMIT:] or f"exit {done.returncode}"
        raise CatalogRefused(f"git {what} failed: {message}", code="git_failed", field="git_url")
    return done.stdout.decode(errors="replace").strip()


@contextmanager
def checkout(git_url: str, ref: str, *, timeout: float, allow_file: bool) -> Iterator[tuple[Path, str]]:
    """A checkout of `ref` of `git_url` (a directory without `.git`) and its commit id, removed afterwards."""
    git_url, ref = check_git_source(git_url, ref, allow_file=allow_file)
    protocols = NETWORK_PROTOCOLS + (":file" if allow_file else "")
    with tempfile.TemporaryDirectory(prefix="swarm-catalog-") as scratch:
        git_dir, work_tree = Path(scratch) / "repo.git", Path(scratch) / "tree"
        work_tree.mkdir()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": scratch, "GIT_TERMINAL_PROMPT": "0",
               "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_ALLOW_PROTOCOL": protocols,
               "GIT_ASKPASS": "/bin/false", "SSH_ASKPASS": "/bin/false",
               "GIT_SSH_COMMAND": "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new"}
        _git(["init", "-q", "--bare", str(git_dir)], env=env, timeout=timeout, what="init")
        bare = ["--git-dir", str(git_dir)]
        _git([*bare, "fetch", "-q", "--depth", "1", "--no-tags", "--", git_url, ref], env=env, timeout=timeout,
             what=f"fetch of {ref}")
        _git([*bare, "--work-tree", str(work_tree), "checkout", "-q", "-f", "FETCH_HEAD", "--", "."], env=env,
             timeout=timeout, what="checkout")
        commit_sha = _git([*bare, "rev-parse", "FETCH_HEAD"], env=env, timeout=timeout, what="rev-parse")
        yield work_tree, commit_sha
