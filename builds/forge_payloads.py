"""Reading the forges' webhook payloads: which repository, namespace and refs a delivery names, and who pushed.

Pure functions of the (already parsed) JSON body; values of the wrong JSON
type read as absent. The shapes are the forges' documented examples:
GitHub's `push` and `ping` (repository and organisation hooks), GitLab's
`Push Hook` and `Tag Push Hook` (also the older ones without
`user_username`), Bitbucket Cloud's `repo:push`.
"""
from __future__ import annotations

from dataclasses import dataclass

from builds.choices import WebhookProvider
from builds.config import normalize_scm_url
from swarm.core.inputs import text_problem

ZERO_SHA = "0" * 40
BRANCH, TAG = "branch", "tag"

#: The event header values that are a push (anything else is answered as ignored at once).
PUSH_EVENTS = {
    WebhookProvider.GITHUB: {"push"},
    WebhookProvider.GITLAB: {"Push Hook", "Tag Push Hook"},
    WebhookProvider.BITBUCKET: {"repo:push"},
}
#: The event header values of a hook's test ping (answered `pong`).
PING_EVENTS = {
    WebhookProvider.GITHUB: {"ping"},
    WebhookProvider.GITLAB: set(),
    WebhookProvider.BITBUCKET: {"diagnostics:ping"},
}


@dataclass(frozen=True)
class PushEvent:
    """One ref update from a push payload: a branch or a tag, pushed or deleted."""

    repository_urls: tuple[str, ...]
    ref_type: str  # BRANCH or TAG
    name: str
    commit_sha: str
    deleted: bool
    pusher: str

    @property
    def branch(self) -> str:
        """The name of the ref (kept for callers that speak of branches)."""
        return self.name


def _text(value) -> str:
    """A payload value that should be a string, or "" when it is anything else."""
    return value if isinstance(value, str) else ""


def _object(value) -> dict:
    """A payload value that should be an object, or {} when it is anything else."""
    return value if isinstance(value, dict) else {}


def repository_urls(provider: str, payload: dict) -> list[str]:
    """The normalised identities (`builds.config.normalize_scm_url`) of the repository a delivery names."""
    urls: list = []
    if provider == WebhookProvider.GITHUB:
        repo = _object(payload.get("repository"))
        urls = [repo.get(k) for k in ("clone_url", "ssh_url", "git_url", "html_url", "url", "svn_url")]
    elif provider == WebhookProvider.GITLAB:
        project = _object(payload.get("project"))
        repo = _object(payload.get("repository"))
        urls = [project.get(k) for k in ("git_http_url", "git_ssh_url", "web_url", "http_url", "ssh_url")]
        urls += [repo.get(k) for k in ("git_http_url", "git_ssh_url", "homepage", "url")]
    elif provider == WebhookProvider.BITBUCKET:
        repo = _object(payload.get("repository"))
        links = _object(repo.get("links"))
        urls = [_object(links.get("html")).get("href")]
        clones = links.get("clone")
        for clone in clones if isinstance(clones, list) else []:
            urls.append(_object(clone).get("href"))
        if _text(repo.get("full_name")):
            urls.append(f"https://bitbucket.org/{repo['full_name']}")
    # A URL no column can store matches no job (the body is refused once its signature is checked).
    return sorted({normalize_scm_url(u) for u in urls if isinstance(u, str) and u and text_problem(u) is None})


def namespaces(provider: str, payload: dict) -> list[str]:
    """The namespaces whose webhook secret may have signed this delivery, lower-cased.

    GitHub: the organisation (an organisation hook's ping names only that)
    and the repository's owner. GitLab: every group the project is in, from
    the top (a group hook fires for projects of its subgroups). Bitbucket:
    the workspace.
    """
    found: list[str] = []
    if provider == WebhookProvider.GITHUB:
        found.append(_text(_object(payload.get("organization")).get("login")))
        repo = _object(payload.get("repository"))
        owner = _object(repo.get("owner"))
        found.append(_text(owner.get("login")) or _text(owner.get("name")))
        found.append(_text(repo.get("full_name")).rpartition("/")[0])
    elif provider == WebhookProvider.GITLAB:
        path = _text(_object(payload.get("project")).get("path_with_namespace"))
        groups = path.split("/")[:-1]
        found += ["/".join(groups[:depth]) for depth in range(1, len(groups) + 1)]
    elif provider == WebhookProvider.BITBUCKET:
        repo = _object(payload.get("repository"))
        found.append(_text(_object(repo.get("workspace")).get("slug")))
        found.append(_text(repo.get("full_name")).partition("/")[0])
    return sorted({name.lower() for name in found if name and text_problem(name) is None and len(name) <= 255})


def pusher(provider: str, payload: dict) -> str:
    """The forge identity that pushed: GitHub sender login (else pusher name), GitLab `user_username`
    (else `user_name`, all older payloads carry), Bitbucket actor nickname (else display name)."""
    if provider == WebhookProvider.GITHUB:
        return _text(_object(payload.get("sender")).get("login")) or _text(_object(payload.get("pusher")).get("name"))
    if provider == WebhookProvider.GITLAB:
        return _text(payload.get("user_username")) or _text(payload.get("user_name"))
    actor = _object(payload.get("actor"))
    return _text(actor.get("nickname")) or _text(actor.get("display_name")) or _text(actor.get("uuid"))


def _ref(ref: str) -> tuple[str, str] | None:
    if ref.startswith("refs/heads/"):
        return BRANCH, ref[len("refs/heads/"):]
    if ref.startswith("refs/tags/"):
        return TAG, ref[len("refs/tags/"):]
    return None


def parse_push_events(*, provider: str, event: str, payload: dict) -> list[PushEvent]:
    """The branch and tag updates a push payload describes (other events give none).

    A tag's commit is the commit it points at (GitHub `head_commit.id`,
    GitLab `checkout_sha`; the `after` of an annotated tag is the tag object).
    Branch and tag names and commit ids are returned as pushed, for
    `webhook_delivery_process` to check.
    """
    if event not in PUSH_EVENTS.get(provider, ()):
        return []
    urls = tuple(repository_urls(provider, payload))
    who = pusher(provider, payload)
    pushes: list[PushEvent] = []
    if provider in (WebhookProvider.GITHUB, WebhookProvider.GITLAB):
        parsed = _ref(_text(payload.get("ref")))
        if parsed is None:
            return []
        ref_type, name = parsed
        after = _text(payload.get("after"))
        deleted = after == ZERO_SHA or (provider == WebhookProvider.GITHUB and payload.get("deleted") is True)
        if provider == WebhookProvider.GITHUB:
            commit = _text(_object(payload.get("head_commit")).get("id")) if ref_type == TAG else ""
        else:
            commit = _text(payload.get("checkout_sha"))
        pushes.append(PushEvent(urls, ref_type, name, "" if deleted else (commit or after), deleted, who))
    else:
        changes = _object(payload.get("push")).get("changes")
        for change in changes if isinstance(changes, list) else []:
            change = _object(change)
            new, old = change.get("new"), change.get("old")
            target = _object(new or old)
            kind = {"branch": BRANCH, "named_branch": BRANCH, "tag": TAG, "annotated_tag": TAG}.get(
                target.get("type"))
            if kind is None:
                continue
            if not isinstance(new, dict):
                pushes.append(PushEvent(urls, kind, _text(target.get("name")), "", True, who))
            else:
                pushes.append(PushEvent(urls, kind, _text(new.get("name")),
                                        _text(_object(new.get("target")).get("hash")), False, who))
    return pushes
