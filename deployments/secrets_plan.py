"""The secrets plan of a scenario on a tier: every secret its bundle needs, how each reaches an install.

Which nodes are in a tier's bundle (`bundle_nodes`): every required node, and every optional one
that is supported on the tier and not excluded by the profile's `settings.exclude_optional`.
The secrets of the others are *excluded*, with the reason.

Where secrets are found (`deployments.catalog.parsing`): a resource's `runtime.env` keys that
name a secret (`POSTGRES_PASSWORD`) are **infrastructure** — the server's own credential, which
only exists because the bundle would carry that server; `credentials.env` / `credentials.descriptors`
(Vrooli's `classification`: infrastructure / service / user); a scenario's `environment` keys
that name a secret (generated per install); `deployment.tiers.<tier>.secrets`; and Swarm's
explicit `secrets` list. One secret declared by several nodes is one entry (the most
restrictive declaration wins: infrastructure over the rest).

Classes: `infrastructure` never reaches a bundle; `per_install_generated` carries a generator
(`random` with `length` and `charset`, `hex`/`base64` with `bytes`, `uuid`); `user_prompt` a
prompt (label, description, hint, validation pattern); `remote_fetch` a source (`vault://…`,
`https://…`) and key. A profile's `secrets` decisions re-classify a secret by id — including
an infrastructure one, which is how an operator says "generate this per install" for a server
that the bundle does carry; without a decision, an infrastructure secret stops assembly and the
plan names the swaps that would remove it. Values are never read, stored or returned.
"""
from __future__ import annotations

from collections.abc import Callable

from deployments.lookup import EntryLookup

INFRASTRUCTURE = "infrastructure"


def bundle_nodes(analysis: dict, tier: str, settings: dict | None = None) -> tuple[list[dict], list[dict]]:
    """`(included, dropped)` nodes of a tier's bundle; each dropped node carries a `dropped_because`."""
    settings = settings or {}
    excluded = set(settings.get("exclude_optional", []))
    scores = {score["key"]: score for score in analysis["fitness"][tier]["dependencies"]}
    included, dropped = [], []
    for node in analysis["nodes"]:
        score = scores[node["key"]]
        if node["required"]:
            included.append(node)
        elif node["name"] in excluded:
            dropped.append({**node, "dropped_because": "an optional dependency the profile's settings exclude"})
        elif not score["supported"]:
            dropped.append({**node, "dropped_because": f"optional and unsupported on {tier}: {score['reason']}"})
        else:
            included.append(node)
    return included, dropped


def default_generator(secret_id: str) -> dict:
    """The generator of a per-install secret that declares none: 32 random bytes as hex for keys, else 32 characters."""
    name = secret_id.upper()
    if name.endswith("KEY") and "PASS" not in name:
        return {"type": "hex", "bytes": 32}
    return {"type": "random", "length": 32, "charset": "alnum"}


def _declarations(nodes: list[dict], documents: dict[str, dict]) -> dict[str, list[tuple[dict, dict]]]:
    found: dict[str, list[tuple[dict, dict]]] = {}
    for node in nodes:
        document = documents.get(node["key"]) or {}
        for secret in document.get("secrets", []):
            found.setdefault(secret["id"], []).append((node, secret))
    return found


_RANK = {"infrastructure": 0, "remote_fetch": 1, "user_prompt": 2, "per_install_generated": 3}


def _item(secret_id: str, declarations: list[tuple[dict, dict]], decision: dict | None) -> dict:
    strictest = min(declarations, key=lambda pair: _RANK[pair[1]["declared_class"]])[1]
    declared = strictest["declared_class"]
    decided = (decision or {}).get("class")
    secret_class = decided or declared
    item = {
        "id": secret_id,
        "class": secret_class,
        "declared_class": declared,
        "decided": bool(decided),
        "owners": sorted({node["key"] for node, _ in declarations}),
        "found_in": sorted({f"{secret['path']}#{secret['pointer']} ({secret['source']})"
                            for _, secret in declarations}),
        "description": (decision or {}).get("description") or strictest["description"],
        "required": any(secret["required"] for _, secret in declarations),
        "target": (decision or {}).get("target") or strictest["target"],
        "derived_env": sorted({name for _, secret in declarations for name in secret.get("derived", [])}),
    }
    if secret_class == "per_install_generated":
        item["generator"] = (decision or {}).get("generator") or strictest.get("generator") or \
            default_generator(secret_id)
    elif secret_class == "user_prompt":
        prompt = (decision or {}).get("prompt")
        if prompt is None:
            prompt = {"label": strictest["label"] or secret_id.replace("_", " ").title()}
            if strictest["description"]:
                prompt["description"] = strictest["description"]
            if strictest["hint"]:
                prompt["hint"] = strictest["hint"]
            if strictest["validation"]:
                prompt["validation"] = {"pattern": strictest["validation"]}
        item["prompt"] = prompt
    elif secret_class == "remote_fetch":
        item["remote"] = (decision or {}).get("remote") or strictest.get("remote") or {}
    return item


def plan_secrets(*, analysis: dict, lookup: EntryLookup, tier: str, decisions: dict | None = None,
                 settings: dict | None = None, analysis_for: Callable[[dict], dict] | None = None) -> dict:
    """The plan: `{tier, bundle_safe, secrets, excluded, infrastructure, unused_decisions}`.

    `secrets` are the bundle-safe entries; `excluded` every secret kept out, with its reason
    (infrastructure ones included); `infrastructure` the ones that stop assembly, each with
    `fixes` — the swaps that remove it (checked by analysing the swapped graph through
    `analysis_for(swaps)`) and the decision that would classify it.
    """
    decisions = decisions or {}
    included, dropped = bundle_nodes(analysis, tier, settings)
    documents = lookup.get_many([node["key"] for node in included + dropped])
    needed = _declarations(included, documents)
    left_out = _declarations(dropped, documents)
    secrets, infrastructure, excluded = [], [], []
    for secret_id in sorted(needed):
        item = _item(secret_id, needed[secret_id], decisions.get(secret_id))
        if item["class"] == INFRASTRUCTURE:
            item["fixes"] = _fixes(secret_id, item["owners"], analysis, lookup, tier, settings, analysis_for)
            infrastructure.append(item)
            excluded.append({"id": secret_id, "owners": item["owners"],
                             "reason": _infrastructure_reason(item)})
        else:
            secrets.append(item)
    for secret_id in sorted(set(left_out) - set(needed)):
        nodes = sorted({node["key"] for node, _ in left_out[secret_id]})
        reasons = sorted({node["dropped_because"] for node, _ in left_out[secret_id]})
        excluded.append({"id": secret_id, "owners": nodes,
                         "reason": f"{', '.join(nodes)} is not in the {tier} bundle: {'; '.join(reasons)}"})
    return {
        "tier": tier,
        "bundle_safe": not infrastructure,
        "secrets": secrets,
        "excluded": excluded,
        "infrastructure": infrastructure,
        "unused_decisions": sorted(set(decisions) - set(needed)),
    }


def _infrastructure_reason(item: dict) -> str:
    where = "; ".join(item["found_in"])
    fixes = item["fixes"]
    owners = ", ".join(item["owners"])
    text = f"{item['id']} is an infrastructure secret of {owners} ({where}); it never goes into a bundle"
    if fixes["swaps"]:
        text += "; " + " or ".join(f"swap {swap['original']} → {swap['replacement']}" for swap in fixes["swaps"])
        text += " removes it"
    else:
        text += "; no swap in this catalog removes it"
    return text + f", or decide it in the profile's secrets ({fixes['decide']})"


def _fixes(secret_id: str, owners: list[str], analysis: dict, lookup: EntryLookup, tier: str, settings: dict | None,
           analysis_for: Callable[[dict], dict] | None) -> dict:
    swaps = []
    owner_names = {owner.split(":", 1)[1] for owner in owners}
    for suggestion in analysis.get("swap_suggestions", []):
        if suggestion["original"] not in owner_names or not suggestion["available"] or analysis_for is None:
            continue
        after = analysis_for({**analysis["swaps"], suggestion["original"]: suggestion["replacement"]})
        still, _ = bundle_nodes(after, tier, settings)
        documents = lookup.get_many([node["key"] for node in still])
        if secret_id not in _declarations(still, documents):
            swaps.append({"original": suggestion["original"], "replacement": suggestion["replacement"],
                          "summary": suggestion["summary"]})
    return {"swaps": swaps,
            "decide": f'"{secret_id}": {{"class": "per_install_generated"}} or {{"class": "remote_fetch", '
                      f'"remote": {{"source": "vault://…"}}}}'}
