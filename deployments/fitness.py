"""The one fitness scorer: per dependency per tier a score in [0, 1], `supported`, a reason, `blocking`;
and the one rule that turns them into a tier's score.

**Per dependency** (`score_dependency`), the first of these that speaks decides:

1. the dependency is missing from the catalog, or its file is invalid → unsupported, 0;
2. an edge to it fails its version check (`unsatisfied`, `invalid_range`) → unsupported, 0;
3. a statement by a scenario that uses it (`tier_feasibility.dependencies…platform_support.<tier>`,
   or the older `deployment.dependencies…`): the most pessimistic one when several do;
4. its own statement (resource.json `deployment.profiles.<tier>`, service.json `deployment.tiers.<tier>`);
5. Swarm's default for a well-known resource (`deployments.defaults.RESOURCES`);
6. what its kind implies: a hosted API (`runs_as: remote`) 0.9, an embedded library 1.0,
   `bundling: host-required` 0.5 on a desktop and unsupported on a phone;
7. nothing says anything → supported at the tier's `unknown_score` (0.9 local … 0.4 mobile),
   "unverified".

A statement with `supported` but no score scores 1.0 (supported) or 0.0; one with a score but
no `supported` is supported from 0.5 up. Then the tier's budget caps it: a dependency that on
its own needs more RAM, disk or cores than one install of the tier has is unsupported (0); one
that needs a GPU is unsupported where the tier has none and scores at most 0.5 where it may.

A dependency is **blocking** on a tier when it is unsupported there *and* required (reached
through required edges only). An unsupported optional dependency is not blocking: it is left
out of that tier's bundle.

**Per tier** (`aggregate`): the score is the lowest score among the required nodes (the
scenario itself included) and the budget factor — `min(1, budget / need)` of the summed
requirements, for RAM, disk and cores. The weakest part bounds how deployable the bundle is,
which is what Vrooli's bands read (≥ 0.9 ship-ready, 0.6–0.89 works with caveats, < 0.6 needs
swaps). The tier is **deployable** when nothing blocks and the requirements fit the budget.
"""
from __future__ import annotations

from dataclasses import dataclass

from deployments.defaults import RESOURCES, TierStatement
from deployments.requirements import Requirements, describe_megabytes
from deployments.tiers import TIER_BUDGETS, TIERS

SUPPORTED_FROM = 0.5
BUDGET_KEY = "budget"


@dataclass(frozen=True)
class DependencyScore:
    """How one node of the graph fares on one tier, and why."""

    key: str
    score: float
    supported: bool
    reason: str
    blocking: bool
    required: bool
    source: str
    declared_by: str = ""

    def as_dict(self) -> dict:
        return {"key": self.key, "score": self.score, "supported": self.supported, "reason": self.reason,
                "blocking": self.blocking, "required": self.required, "source": self.source,
                "declared_by": self.declared_by}


def _effective(statement: dict) -> tuple[bool, float] | None:
    supported, score = statement.get("supported"), statement.get("score")
    if supported is None and score is None:
        return None
    if score is None:
        score = 1.0 if supported else 0.0
    if supported is None:
        supported = score >= SUPPORTED_FROM
    return bool(supported), round(float(score), 3)


def _implied(document: dict, tier: str) -> TierStatement | None:
    runs_as = document.get("runs_as")
    if runs_as == "remote":
        return TierStatement(True, 0.9, "a hosted API: needs network access and an account")
    if runs_as == "library":
        return TierStatement(True, 1.0, "an embedded library: ships inside the app")
    if document.get("bundling") == "host-required":
        if tier == "desktop":
            return TierStatement(True, 0.5, "must already be on the user's machine (bundling: host-required)")
        if tier == "mobile":
            return TierStatement(False, 0.0, "needs the host to provide it, which a phone cannot")
    return None


def score_dependency(*, key: str, document: dict | None, tier: str, required: bool, requirements: Requirements,
                     statements: list[tuple[str, dict]], version_problem: str = "") -> DependencyScore:
    """The score of one node on one tier (the rule is in this module's docstring).

    `statements` are `(dependent key, statement for this tier)` from the scenarios that use the
    node; `version_problem` is the detail of a failed version check on an edge to it.
    """
    def result(supported: bool, score: float, reason: str, source: str, declared_by: str = "") -> DependencyScore:
        return DependencyScore(key, score, supported, reason, blocking=required and not supported,
                               required=required, source=source, declared_by=declared_by)

    if document is None:
        return result(False, 0.0, "not in the catalog", "missing")
    if not document.get("valid", True):
        first = document["problems"][0]
        where = f"#{first['pointer']}" if first.get("pointer") else ""
        return result(False, 0.0, f"{document['path']}{where} is invalid: {first['message']}", "invalid")
    if version_problem:
        return result(False, 0.0, version_problem, "version")

    chosen = None
    for dependent, statement in statements:
        effective = _effective(statement)
        if effective is None:
            continue
        rank = (effective[1], effective[0])
        if chosen is None or rank < chosen[0]:
            chosen = (rank, effective, statement.get("reason") or "", "declared", dependent)
    if chosen is None:
        own = document.get("own_support", {}).get(tier)
        effective = _effective(own) if own else None
        if effective is not None:
            chosen = (None, effective, own.get("reason") or "", "catalog", "")
    if chosen is None and document["kind"] == "resource" and document["name"] in RESOURCES:
        default = RESOURCES[document["name"]].tiers.get(tier)
        if default is not None:
            chosen = (None, (default.supported, default.score), default.reason, "default", "")
    if chosen is None:
        implied = _implied(document, tier)
        if implied is not None:
            chosen = (None, (implied.supported, implied.score), implied.reason, "catalog", "")
    if chosen is None:
        budget = TIER_BUDGETS[tier]
        chosen = (None, (True, budget.unknown_score),
                  f"nothing in the catalog or Swarm's defaults says how it runs on {tier}; assumed to work "
                  f"(unverified)", "unknown", "")
    _rank, (supported, score), reason, source, declared_by = chosen
    if not reason:
        reason = f"{'supported' if supported else 'not supported'} on {tier}"
        if declared_by:
            reason += f", says {declared_by}"

    budget = TIER_BUDGETS[tier]
    over = _over_budget(requirements, tier)
    if over:
        return result(False, 0.0, f"{over}; {reason}", "budget", declared_by)
    if requirements.gpu and budget.gpu == "no":
        return result(False, 0.0, f"needs a GPU; no {tier} install has one", "budget", declared_by)
    if requirements.gpu and budget.gpu == "maybe" and score > 0.5:
        return result(supported, 0.5, f"{reason}; needs a GPU, which not every {tier} install has", source,
                      declared_by)
    return result(supported, score, reason, source, declared_by)


def _over_budget(requirements: Requirements, tier: str) -> str:
    budget = TIER_BUDGETS[tier]
    if requirements.ram_mb > budget.ram_mb:
        return (f"needs {describe_megabytes(requirements.ram_mb)} RAM; one {tier} install has "
                f"{describe_megabytes(budget.ram_mb)}")
    if requirements.disk_mb > budget.disk_mb:
        return (f"needs {describe_megabytes(requirements.disk_mb)} disk; one {tier} install has "
                f"{describe_megabytes(budget.disk_mb)}")
    if requirements.cpu_cores > budget.cpu_cores:
        return f"needs {requirements.cpu_cores:g} cores; one {tier} install has {budget.cpu_cores:g}"
    return ""


def budget_factor(requirements: Requirements, tier: str) -> tuple[float, str]:
    """`min(1, budget / need)` over RAM, disk and cores of a tier, and a sentence saying how it fits."""
    budget = TIER_BUDGETS[tier]
    factors = [1.0]
    for need, have in ((requirements.ram_mb, budget.ram_mb), (requirements.disk_mb, budget.disk_mb),
                       (requirements.cpu_cores, budget.cpu_cores)):
        if need > 0:
            factors.append(min(1.0, have / need))
    factor = round(min(factors), 3)
    sizes = (f"{describe_megabytes(requirements.ram_mb)} RAM, {describe_megabytes(requirements.disk_mb)} disk, "
             f"{requirements.cpu_cores:g} cores")
    limits = (f"{describe_megabytes(budget.ram_mb)} RAM, {describe_megabytes(budget.disk_mb)} disk, "
              f"{budget.cpu_cores:g} cores")
    if factor < 1:
        return factor, f"needs {sizes}: more than one {tier} install has ({limits})"
    return factor, f"needs {sizes}: fits one {tier} install ({limits})"


def aggregate(*, tier: str, scores: list[DependencyScore], required_total: Requirements) -> dict:
    """A tier's fitness from its nodes' scores: score, deployable, what blocks, and a readable explanation."""
    required_scores = [score for score in scores if score.required]
    optional_scores = [score for score in scores if not score.required]
    weakest = min(required_scores, key=lambda score: (score.score, score.key))
    factor, budget_line = budget_factor(required_total, tier)
    blocking = [score.key for score in required_scores if score.blocking]
    if factor < 1:
        blocking.append(BUDGET_KEY)
    value = round(min(weakest.score, factor), 3)
    dropped = [score.key for score in optional_scores if not score.supported]
    lines = []
    if blocking:
        names = ", ".join(blocking)
        lines.append(f"{tier}: {value:.2f}, not deployable — blocked by {names}")
    else:
        lines.append(f"{tier}: {value:.2f}, deployable")
    for score in required_scores:
        if score.blocking:
            lines.append(f"blocking: {score.key} ({score.score:.2f}): {score.reason}")
    if not blocking or weakest.key not in blocking:
        lines.append(f"weakest required part: {weakest.key} ({weakest.score:.2f}): {weakest.reason}")
    lines.append(f"requirements: {budget_line}")
    for key in dropped:
        lines.append(f"optional {key} is unsupported on {tier}: left out of this tier's bundle")
    return {
        "tier": tier, "score": value, "deployable": not blocking, "blocking": blocking,
        "weakest": weakest.key, "budget_factor": factor, "dropped_optional": dropped,
        "explanation": lines,
    }


def score_all(*, nodes: list[tuple[str, dict | None, bool, Requirements, dict[str, list], str]],
              required_total: Requirements) -> dict:
    """Every tier's fitness for the given nodes: `{tier: {aggregate…, "dependencies": [score…]}}`.

    Each node is `(key, document, required, requirements, statements by tier, version problem)`.
    """
    fitness = {}
    for tier in TIERS:
        scores = [score_dependency(key=key, document=document, tier=tier, required=required,
                                   requirements=requirements, statements=statements.get(tier, []),
                                   version_problem=version_problem)
                  for key, document, required, requirements, statements, version_problem in nodes]
        fitness[tier] = aggregate(tier=tier, scores=scores, required_total=required_total)
        fitness[tier]["dependencies"] = [score.as_dict() for score in scores]
    return fitness
