"""Validation of a job's `build_config` and of SCM URLs, with errors naming the field at fault."""
from __future__ import annotations

import fnmatch
import re
from urllib.parse import urlsplit

from builds.choices import FailureReason
from swarm.core.errors import ApiError

DEFAULT_TIMEOUT_SECONDS = 3600
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
#: Without a `retry` section a build that lost its drone is retried once.
DEFAULT_RETRY = {"max": 1, "when": [FailureReason.RUNNER_SYSTEM_FAILURE.value]}
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/=-]{0,99}$")
NOTIFY_STATES = ("success", "failed", "canceled")


def _invalid(field: str, detail: str) -> ApiError:
    return ApiError(f"{field}: {detail}", code="invalid", field=field)


def validate_build_config(config) -> dict:
    """Return the normalised build config or raise ApiError naming the bad field."""
    if not isinstance(config, dict):
        raise _invalid("build_config", "must be an object")
    allowed = {"image", "steps", "env", "artifacts", "timeout", "labels", "retry", "notifications"}
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
    retry = config.get("retry", DEFAULT_RETRY)
    if not isinstance(retry, dict):
        raise _invalid("build_config.retry", "must be an object {max, when}")
    retry_max = retry.get("max", 0)
    if not isinstance(retry_max, int) or isinstance(retry_max, bool) or not 0 <= retry_max <= 10:
        raise _invalid("build_config.retry.max", "must be an integer between 0 and 10")
    when = retry.get("when", ["always"])
    valid_when = set(FailureReason.values) | {"always"}
    if not isinstance(when, list) or not all(w in valid_when for w in when):
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
    if not isinstance(on, list) or not all(state in NOTIFY_STATES for state in on):
        raise _invalid("build_config.notifications.on", f"must list states among {', '.join(NOTIFY_STATES)}")
    return {
        "image": image,
        "steps": [s for s in steps],
        "env": dict(env),
        "artifacts": list(artifacts),
        "timeout": timeout,
        "labels": sorted(set(labels)),
        "retry": {"max": retry_max, "when": list(when)},
        "notifications": {"email": list(emails), "webhook": webhook or "", "on": list(on)},
    }


def retry_allowed(config: dict, *, failure_reason: str, retries_used: int) -> bool:
    """Whether the job's retry policy allows another attempt after `failure_reason`."""
    retry = config.get("retry", DEFAULT_RETRY)
    if retries_used >= int(retry.get("max", 0)):
        return False
    when = retry.get("when", ["always"])
    return "always" in when or failure_reason in when


def normalize_scm_url(url: str) -> str:
    """A comparable form of a git URL: no credentials, scheme or `.git`, lowercase host.

    `https://user:pw@GitHub.com/Acme/App.git`, `git@github.com:Acme/App.git`
    and `ssh://git@github.com/Acme/App` all become `github.com/Acme/App`;
    `file:///srv/repo.git` becomes `file:///srv/repo`.
    """
    url = (url or "").strip()
    if url.startswith("file://"):
        path = url[len("file://"):]
        return "file://" + path.rstrip("/").removesuffix(".git")
    if url.startswith("/"):
        return "file://" + url.rstrip("/").removesuffix(".git")
    scp = re.match(r"^(?:[^@/]+@)?([^:/]+):(?!//)(.+)$", url)
    if scp and "://" not in url:
        host, path = scp.group(1), scp.group(2)
    else:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.port and parts.port not in (22, 80, 443):
            host = f"{host}:{parts.port}"
        path = parts.path
    path = path.strip("/").removesuffix(".git")
    return f"{host.lower()}/{path}"


def validate_scm_url(url: str) -> str:
    """Return the URL when it is a usable git URL, else raise naming `scm_url`."""
    if not isinstance(url, str) or not url.strip():
        raise _invalid("scm_url", "is required")
    url = url.strip()
    if url.startswith(("file://", "/")):
        return url
    if re.match(r"^(?:[^@/]+@)?[^:/]+:(?!//).+$", url):
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ssh", "git") or not parts.hostname or not parts.path.strip("/"):
        raise _invalid("scm_url", "must be an http(s), ssh, git or file:// repository URL")
    return url


def branch_matches(branch_filter: str, branch: str) -> bool:
    """Whether `branch` matches the comma-separated globs of `branch_filter` (empty matches all)."""
    patterns = [p.strip() for p in (branch_filter or "").split(",") if p.strip()]
    return not patterns or any(fnmatch.fnmatchcase(branch, pattern) for pattern in patterns)
