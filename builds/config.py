"""Validation of a job's `build_config`, SCM URLs, branch names and commit ids, with errors naming the field.

Branch names and commit ids reach `git` on the drones (`clone --branch`,
`fetch origin <branch>`), so they are held to git's own rules
(`git_branch_name_problem`, tested against `git check-ref-format --branch`)
and a few of Swarm's on top (`branch_name_problem`).
"""
from __future__ import annotations

import fnmatch
import re
import unicodedata
from urllib.parse import urlsplit

from builds.choices import FailureReason
from drones.protocol import CONTAINER_LABEL
from swarm.core.errors import ApiError

DEFAULT_TIMEOUT_SECONDS = 3600
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
#: Without a `retry` section a build that lost its drone, or could not fetch its source (networks
#: fail for a moment), is retried once.
DEFAULT_RETRY = {"max": 1, "when": [FailureReason.RUNNER_SYSTEM_FAILURE.value, FailureReason.SOURCE_FAILURE.value]}
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/=-]{0,99}$")
NOTIFY_STATES = ("success", "failed", "canceled")
#: What a job may require of a drone's isolation (`build_config.sandbox`): bubblewrap (the default), or none
#: (runs on a drone that opted out of sandboxing, or sandboxed anyway on one that has bubblewrap).
SANDBOX_REQUIREMENTS = ("bubblewrap", "none")
DEFAULT_SANDBOX = "bubblewrap"
#: The longest branch name taken: the `branch` and `default_branch` columns' length.
MAX_BRANCH_CHARS = 200
#: A commit id: an abbreviated (at least 7) or full SHA-1 (40) or SHA-256 (64) in hex.
COMMIT_SHA = re.compile(r"[0-9a-f]{7,64}")
#: Characters git refuses anywhere in a ref name (`git check-ref-format`, rules 4, 5 and 10).
_GIT_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
#: Unicode categories Swarm refuses in branch names although git allows non-ASCII: other controls
#: (C1), format characters (bidi overrides such as U+202E, zero-width spaces, BOM), surrogates,
#: private use, unassigned code points, and separators other than the ASCII space git refuses.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


def _invalid(field: str, detail: str) -> ApiError:
    return ApiError(f"{field}: {detail}", code="invalid", field=field)


def validate_build_config(config) -> dict:
    """Return the normalised build config or raise ApiError naming the bad field."""
    if not isinstance(config, dict):
        raise _invalid("build_config", "must be an object")
    allowed = {"image", "steps", "env", "artifacts", "timeout", "labels", "retry", "notifications", "sandbox"}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise _invalid(f"build_config.{unknown[0]}", f"unknown key; expected one of {', '.join(sorted(allowed))}")
    steps = config.get("steps")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s.strip() for s in steps):
        raise _invalid("build_config.steps", "must be a non-empty list of shell commands")
    image = config.get("image", "")
    if not isinstance(image, str):
        raise _invalid("build_config.image", "must be a string")
    env = config.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise _invalid("build_config.env", "must map names to string values")
    for name in env:
        if not ENV_NAME.match(name):
            raise _invalid("build_config.env", f"{name!r} is not a valid variable name")
    artifacts = config.get("artifacts", [])
    if not isinstance(artifacts, list) or not all(isinstance(a, str) and a.strip() for a in artifacts):
        raise _invalid("build_config.artifacts", "must be a list of glob patterns")
    for pattern in artifacts:
        if pattern.startswith("/") or ".." in pattern.split("/"):
            raise _invalid("build_config.artifacts", f"{pattern!r} must stay inside the workspace")
    timeout = config.get("timeout", DEFAULT_TIMEOUT_SECONDS)
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not 1 <= timeout <= MAX_TIMEOUT_SECONDS:
        raise _invalid("build_config.timeout", f"must be whole seconds between 1 and {MAX_TIMEOUT_SECONDS}")
    labels = config.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(x, str) and LABEL.match(x) for x in labels):
        raise _invalid("build_config.labels", "must be a list of labels (letters, digits, _ . : / = -)")
    reserved = [label for label in labels if label.startswith(("sandbox:", "container:"))]
    if reserved:
        raise _invalid("build_config.labels", f"{reserved[0]!r}: say what isolation the job needs with "
                                              f"build_config.sandbox ({' or '.join(SANDBOX_REQUIREMENTS)}) or "
                                              "build_config.image (runs in a container) instead")
    sandbox = config.get("sandbox", DEFAULT_SANDBOX)
    if sandbox not in SANDBOX_REQUIREMENTS:
        raise _invalid("build_config.sandbox", f"must be one of {', '.join(SANDBOX_REQUIREMENTS)} (the isolation a "
                                               "drone must give the steps; default bubblewrap)")
    retry = config.get("retry", DEFAULT_RETRY)
    if not isinstance(retry, dict):
        raise _invalid("build_config.retry", "must be an object {max, when}")
    retry_max = retry.get("max", 0)
    if not isinstance(retry_max, int) or isinstance(retry_max, bool) or not 0 <= retry_max <= 10:
        raise _invalid("build_config.retry.max", "must be an integer between 0 and 10")
    when = retry.get("when", ["always"])
    valid_when = set(FailureReason.values) | {"always"}
    if not isinstance(when, list) or not all(isinstance(w, str) and w in valid_when for w in when):
        raise _invalid("build_config.retry.when", f"must list failure reasons among {', '.join(sorted(valid_when))}")
    notifications = config.get("notifications", {})
    if not isinstance(notifications, dict):
        raise _invalid("build_config.notifications", "must be an object {email, webhook, on}")
    emails = notifications.get("email", [])
    if not isinstance(emails, list) or not all(isinstance(e, str) and "@" in e for e in emails):
        raise _invalid("build_config.notifications.email", "must be a list of e-mail addresses")
    webhook = notifications.get("webhook", "")
    if webhook and (not isinstance(webhook, str) or urlsplit(webhook).scheme not in ("http", "https")):
        raise _invalid("build_config.notifications.webhook", "must be an http(s) URL")
    on = notifications.get("on", list(NOTIFY_STATES))
    if not isinstance(on, list) or not all(isinstance(state, str) and state in NOTIFY_STATES for state in on):
        raise _invalid("build_config.notifications.on", f"must list states among {', '.join(NOTIFY_STATES)}")
    return {
        "image": image,
        "steps": [s for s in steps],
        "env": dict(env),
        "artifacts": list(artifacts),
        "timeout": timeout,
        "labels": sorted(set(labels)),
        "sandbox": sandbox,
        "retry": {"max": retry_max, "when": list(when)},
        "notifications": {"email": list(emails), "webhook": webhook or "", "on": list(on)},
    }


def required_drone_labels(config: dict) -> list[str]:
    """The labels a drone must carry to take a build of this config: its own and the isolation it needs, an
    implicit label drones carry from what they report (drones/sandbox.py): `container:oci` for a job with an
    `image` (its steps run in a container, the container is the isolation), else `sandbox:<requirement>`."""
    if config.get("image"):
        return sorted(set(config.get("labels", [])) | {CONTAINER_LABEL})
    sandbox = config.get("sandbox", DEFAULT_SANDBOX)
    return sorted(set(config.get("labels", [])) | {f"sandbox:{sandbox}"})


def retry_allowed(config: dict, *, failure_reason: str, retries_used: int) -> bool:
    """Whether the job's retry policy allows another attempt after `failure_reason`."""
    retry = config.get("retry", DEFAULT_RETRY)
    if retries_used >= int(retry.get("max", 0)):
        return False
    when = retry.get("when", ["always"])
    return "always" in when or failure_reason in when


#: Forges whose owner and repository names are case-insensitive (`github.com/Acme/App` is
#: `github.com/acme/app`): their paths compare in lower case. Elsewhere (GitLab, self-hosted
#: servers, file paths) the path compares exactly as typed.
CASE_INSENSITIVE_SCM_HOSTS = frozenset({"github.com", "www.github.com", "bitbucket.org", "www.bitbucket.org"})


def normalize_scm_url(url: str) -> str:
    """A repository's identity, as the forges define it: the one form every URL of it reduces to.

    No credentials, scheme or port 22/80/443; the host in lower case; no
    `.git` suffix and no leading or trailing slash; and for the forges of
    CASE_INSENSITIVE_SCM_HOSTS the owner and name in lower case too. So
    `https://user:pw@GitHub.com/Acme/App.git`, `git@github.com:acme/app`,
    `ssh://git@github.com/Acme/App/` and `https://github.com/ACME/app` all
    become `github.com/acme/app`; `file:///srv/repo.git` becomes
    `file:///srv/repo`. Job creation stores it (`Job.scm_url_normalized`)
    and webhook matching compares pushed URLs through it: one rule.
    """
    url = (url or "").strip()
    if url.startswith("file://"):
        path = url[len("file://"):]
        return "file://" + path.rstrip("/").removesuffix(".git")
    if url.startswith("/"):
        return "file://" + url.rstrip("/").removesuffix(".git")
    scp = re.match(r"^(?:[^@/]+@)?([^:/]+):(?!//)(.+)$", url)
    if scp and "://" not in url:
        host, path = scp.group(1).lower(), scp.group(2)
    else:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:  # "http://[::1" or a port past 65535: no job's URL, so it matches none
            return url
        host = (parts.hostname or "").lower()
        if port and port not in (22, 80, 443):
            host = f"{host}:{port}"
        path = parts.path
    path = path.strip("/").removesuffix(".git").rstrip("/")
    if host in CASE_INSENSITIVE_SCM_HOSTS:
        host, path = host.removeprefix("www."), path.lower()
    return f"{host}/{path}"


def validate_scm_url(url: str) -> str:
    """Return the URL when it is a usable git URL, else raise naming `scm_url`."""
    if not isinstance(url, str) or not url.strip():
        raise _invalid("scm_url", "is required")
    url = url.strip()
    if url.startswith(("file://", "/")):
        return url
    if re.match(r"^(?:[^@/]+@)?[^:/]+:(?!//).+$", url):
        return url
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError past 65535
    except ValueError as error:
        raise _invalid("scm_url", f"is not a URL ({error})") from None
    if parts.scheme not in ("http", "https", "ssh", "git") or not parts.hostname or not parts.path.strip("/"):
        raise _invalid("scm_url", "must be an http(s), ssh, git or file:// repository URL")
    return url


def branch_matches(branch_filter: str, branch: str) -> bool:
    """Whether `branch` matches the comma-separated globs of `branch_filter` (empty matches all)."""
    patterns = [p.strip() for p in (branch_filter or "").split(",") if p.strip()]
    return not patterns or any(fnmatch.fnmatchcase(branch, pattern) for pattern in patterns)


def git_branch_name_problem(name: str) -> str | None:
    """Why `git check-ref-format --branch <name>` refuses `name`, or None when git takes it.

    git's rules for a branch name (checked as `refs/heads/<name>`, plus the
    branch-only ones): no ASCII control character, space, `~ ^ : ? * [ \\`
    anywhere; no `..` and no `@{`; no empty component (a leading or trailing
    `/`, or `//`); no component that starts with `.` or ends with `.lock`;
    not ending with `.`; not starting with `-`; not `HEAD`. Non-ASCII
    characters are allowed, as git allows them (see `branch_name_problem`).
    """
    if not name:
        return "it is empty"
    if name.startswith("-"):
        return "it starts with '-'"
    if name == "HEAD":
        return "HEAD is not a branch name"
    forbidden = _GIT_REF_FORBIDDEN.search(name)
    if forbidden:
        character = forbidden.group()
        what = "a space" if character == " " else (
            f"the control character U+{ord(character):04X}" if character < " " or character == "\x7f"
            else f"{character!r}")
        return f"it contains {what}"
    if ".." in name:
        return "it contains '..'"
    if "@{" in name:
        return "it contains '@{'"
    for component in name.split("/"):
        if not component:
            return "it has an empty path component (a leading or trailing '/', or '//')"
        if component.startswith("."):
            return f"the component {component[:40]!r} starts with '.'"
        if component.endswith(".lock"):
            return f"the component {component[:40]!r} ends with '.lock'"
    if name.endswith("."):
        return "it ends with '.'"
    return None


def branch_name_problem(name) -> str | None:
    """Why Swarm refuses `name` as a branch name, or None: git's rules, and then Swarm's own.

    On top of git's rules: at most MAX_BRANCH_CHARS characters; not `@`
    (git reads a lone `@` as HEAD); and none of the Unicode characters that
    make a name look like another (bidi overrides like U+202E, zero-width
    and other format characters, C1 controls, non-ASCII spaces), which git
    would take.
    """
    if not isinstance(name, str):
        return "it is not a string"
    if len(name) > MAX_BRANCH_CHARS:
        return f"it is longer than {MAX_BRANCH_CHARS} characters"
    if name == "@":
        return "'@' is git's shorthand for HEAD"
    for character in name:
        if character > "\x7f" and unicodedata.category(character) in _REFUSED_CATEGORIES:
            return (f"it contains U+{ord(character):04X} ({unicodedata.name(character, 'unnamed')}), "
                    "a control, format or space character")
    return git_branch_name_problem(name)


def validate_branch_name(name, *, field: str) -> str:
    """`name` when it is a branch name Swarm takes; else a 400 `invalid_ref` naming `field`."""
    problem = branch_name_problem(name)
    if problem:
        shown = repr(name)[:60] if isinstance(name, str) else type(name).__name__
        raise ApiError(f"{field}: {shown} is not a valid git branch name: {problem}.", code="invalid_ref",
                       field=field)
    return name


def commit_sha_problem(sha) -> str | None:
    """Why `sha` is not a commit id (7 to 64 hex digits), or None."""
    if not isinstance(sha, str) or not COMMIT_SHA.fullmatch(sha.lower()):
        return "a commit id is 7 to 64 hexadecimal digits"
    return None


def validate_commit_sha(sha, *, field: str = "commit_sha") -> str:
    """The commit id in lowercase; else a 400 `invalid_ref` naming `field`."""
    problem = commit_sha_problem(sha)
    if problem:
        shown = repr(sha)[:60] if isinstance(sha, str) else type(sha).__name__
        raise ApiError(f"{field}: {shown} is not a commit id: {problem}.", code="invalid_ref", field=field)
    return sha.lower()


def validate_branch_filter(branch_filter, *, field: str = "branch_filter") -> str:
    """Comma-separated branch globs: each is a branch name but for the glob characters `* ? [ ]`."""
    if not isinstance(branch_filter, str):
        raise _invalid(field, "must be a string of comma-separated globs")
    for pattern in (p.strip() for p in branch_filter.split(",")):
        if not pattern:
            continue
        # The glob characters stand for name characters; what is left must be a branch name.
        problem = branch_name_problem(re.sub(r"[*?\[\]]", "x", pattern))
        if problem:
            raise ApiError(f"{field}: the glob {pattern[:60]!r} can match no valid git branch name: {problem}.",
                           code="invalid_ref", field=field)
    return branch_filter


def validate_build_params(params, *, field: str = "params") -> dict:
    """A trigger's params, which every step sees as environment variables: NAME → a string, number or boolean.

    Anything else would be dropped (a name that is no variable name) or
    mangled (an object's repr) when the build is claimed, so it is refused.
    """
    if not isinstance(params, dict):
        raise _invalid(field, "must be an object of NAME: value")
    for name, value in params.items():
        if not ENV_NAME.match(name):
            raise _invalid(f"{field}.{name}"[:100], f"{name[:40]!r} is not a valid variable name")
        if isinstance(value, dict | list) or value is None:
            raise _invalid(f"{field}.{name}", "must be a string, a number or a boolean")
    return params
