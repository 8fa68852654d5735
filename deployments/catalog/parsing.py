"""From catalog files to normalised entries: one document per scenario or resource, whatever its format.

Every file is decoded by the project's strict JSON loader (`swarm.core.inputs.json_loads`:
UTF-8, no NaN, no NUL or lone surrogate, nesting at most SWARM_JSON_MAX_DEPTH), checked
against its shape (`deployments.catalog.shapes`), and rewritten into one normalised document
(below) that the analyzer, the scorer, the secrets plan and the manifest read. A file that
fails is an *invalid entry*: kept under its name with its problems, so that a scenario which
depends on it is told what is wrong with it instead of "missing".

Secret values never leave this module: a resource's `runtime.env` value for a key that names
a secret (`POSTGRES_PASSWORD: "vrooli"`) is dropped here, and only the key, where it was found
and how it is classified are kept.

The normalised document (`CatalogEntry.document`):

    {"kind", "name", "path", "format", "version", "display_name", "description",
     "runs_as", "bundling", "driver",
     "dependencies": [{"kind", "name", "required", "enabled", "version_range", "version", "purpose"}],
     "declared_support": {"resource:postgres": {"desktop": {"supported", "score", "reason", "alternatives"}}},
     "declared_swaps": {"resource:postgres": [{"id", "relationship", "notes"}]},
     "own_support": {"desktop": {"supported", "score", "reason", "alternatives"}},
     "swappable_with": [{"id", "relationship", "notes"}],
     "requirements": {...} | null,
     "secrets": [{"id", "target", "declared_class", "source", "pointer", "label", "description", "required",
                  "validation", "hint", "generator", "remote", "derived", "exported"}],
     "env": {"NAME": "value"}, "ports": [...], "components": [...], "health": [...], "assets": [...]}
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from deployments.catalog.problems import WARNING, Problem, pointer_from_field, pointer_of
from deployments.catalog.shapes import validator
from deployments.catalog.sources import CatalogFile, CatalogTree
from deployments.defaults import RUNS_AS_BY_DRIVER
from deployments.requirements import Requirements
from deployments.tiers import tier_or_none
from swarm.core.errors import ApiError
from swarm.core.inputs import json_loads

#: At most this many shape problems are reported per file (the first ones by pointer).
MAX_PROBLEMS_PER_FILE = 20

#: Environment keys that hold a secret, by name (`POSTGRES_PASSWORD`, `OPENAI_API_KEY`, `JWT_SECRET`, …).
SECRET_KEY = re.compile(r"(^|_)(PASSWORD|PASSWD|PASS|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|SECRET_?KEY|"
                        r"CREDENTIALS?|AUTH_KEY|SIGNING_KEY|ENCRYPTION_KEY)($|_)")

#: Vrooli's secret classifications, in Swarm's classes.
VROOLI_CLASSIFICATION = {"infrastructure": "infrastructure", "service": "per_install_generated",
                         "user": "user_prompt"}

_BUILD_TYPES = {"go_module": "go", "go": "go", "pnpm_vite": "npm", "npm": "npm", "pnpm": "npm", "vite": "npm",
                "node": "npm", "cargo": "rust", "rust": "rust", "python": "python", "pip": "python"}
_SUPPORT_LEVELS = {"supported": 1.0, "build-verified": 0.9, "conditional": 0.75, "partial": 0.5,
                   "unsupported": 0.0}
_TIER_STATUS = {"ready": (True, 1.0), "limited": (True, 0.6), "blocked": (False, 0.1)}


def entry_key(kind: str, name: str) -> str:
    """The key of an entry in a snapshot and in the graph: `resource:postgres`, `scenario:picker-wheel`."""
    return f"{kind}:{name}"


def parse_tree(tree: CatalogTree) -> tuple[dict[str, dict], list[Problem]]:
    """Every entry of a tree (`{key: document}`, invalid ones with `"valid": false`) and every problem."""
    entries: dict[str, dict] = {}
    problems: list[Problem] = []
    for file in tree.files:
        document, file_problems = parse_file(file)
        problems += file_problems
        key = entry_key(file.kind, file.name)
        previous = entries.get(key)
        if previous is not None:
            # A resource may be described twice during Vrooli's move to resource.json: the newer format wins.
            keep, drop = (document, previous) if file.format == "resource.json" else (previous, document)
            problems.append(Problem(drop["path"], "", f"{key} is also described by {keep['path']}, which is used",
                                    code="superseded", severity=WARNING))
            document = keep
        entries[key] = document
    return entries, problems


def parse_file(file: CatalogFile) -> tuple[dict, list[Problem]]:
    """The normalised document of one file (or its invalid stand-in) and the file's problems."""
    if file.data is None:
        return _invalid(file, [file.refusal]), [file.refusal]
    try:
        raw = json_loads(file.data)
    except ApiError as error:
        problem = Problem(file.path, pointer_from_field(error.field), error.detail, code=error.code)
        return _invalid(file, [problem]), [problem]
    if not isinstance(raw, dict):
        problem = Problem(file.path, "", f"the document is a JSON {type(raw).__name__}, not an object",
                          code="not_an_object")
        return _invalid(file, [problem]), [problem]
    errors = sorted(validator(file.format).iter_errors(raw), key=lambda error: list(map(str, error.absolute_path)))
    problems = [Problem(file.path, pointer_of(error.absolute_path), error.message, code="wrong_shape")
                for error in errors[:MAX_PROBLEMS_PER_FILE]]
    if len(errors) > MAX_PROBLEMS_PER_FILE:
        problems.append(Problem(file.path, "", f"{len(errors) - MAX_PROBLEMS_PER_FILE} more shape problems",
                                code="wrong_shape"))
    if problems:
        return _invalid(file, problems), problems
    normaliser = _Normaliser(file, raw)
    document = normaliser.document()
    return document, normaliser.problems


def _invalid(file: CatalogFile, problems: list[Problem]) -> dict:
    return {"kind": file.kind, "name": file.name, "path": file.path, "format": file.format, "valid": False,
            "problems": [problem.as_dict() for problem in problems]}


class _Normaliser:
    """Rewrites one shape-checked file into the normalised document, collecting warnings."""

    def __init__(self, file: CatalogFile, raw: dict):
        self.file = file
        self.raw = raw
        self.problems: list[Problem] = []
        self.base = f"{'scenarios' if file.kind == 'scenario' else 'resources'}/{file.name}"

    def warn(self, parts, message: str, code: str) -> None:
        self.problems.append(Problem(self.file.path, pointer_of(parts), message, code=code, severity=WARNING))

    def document(self) -> dict:
        raw, file = self.raw, self.file
        is_resource_json = file.format == "resource.json"
        service = raw.get("service", {}) if not is_resource_json else {}
        declared_name = raw.get("name") if is_resource_json else service.get("name")
        if declared_name and declared_name != file.name:
            self.warn(["name"] if is_resource_json else ["service", "name"],
                      f"declares the name {declared_name!r}; the directory name {file.name!r} is used", "name_mismatch")
        env, secrets = self.environment_and_secrets()
        ports = self.ports()
        return {
            "kind": file.kind, "name": file.name, "path": file.path, "format": file.format, "valid": True,
            "version": service.get("version") or raw.get("version") or None,
            "display_name": raw.get("display_name") or service.get("displayName") or file.name,
            "description": raw.get("description") or service.get("description") or "",
            "driver": raw.get("driver"),
            "bundling": raw.get("bundling"),
            "runs_as": raw.get("runs_as") or RUNS_AS_BY_DRIVER.get(raw.get("driver") or "") or None,
            "dependencies": self.dependencies(),
            "declared_support": self.declared_support(),
            "declared_swaps": self.declared_swaps(),
            "own_support": self.own_support(),
            "swappable_with": self.swap_options(raw.get("swappable_with", [])),
            "requirements": Requirements.from_dict(raw["requirements"]).as_dict() if "requirements" in raw else None,
            "secrets": secrets,
            "env": env,
            "ports": ports,
            "components": self.components(ports),
            "health": self.health(ports),
            "assets": [dict(asset) for asset in raw.get("assets", [])],
        }

    # --- dependencies -------------------------------------------------------------------------

    def dependencies(self) -> list[dict]:
        raw = self.raw
        found: list[dict] = []
        if self.file.format == "resource.json":
            orchestration = raw.get("orchestration", {})
            for name in [*raw.get("dependencies", []), *orchestration.get("dependencies", [])]:
                found.append(self._dependency("resource", name, {"required": True}))
            for name in orchestration.get("optional_dependencies", []):
                found.append(self._dependency("resource", name, {"required": False}))
        else:
            sections = raw.get("dependencies", {})
            for kind, section in (("resource", "resources"), ("scenario", "scenarios")):
                for name, spec in sections.get(section, {}).items():
                    found.append(self._dependency(kind, name, spec))
        unique: dict[tuple, dict] = {}
        for dependency in found:
            key = (dependency["kind"], dependency["name"])
            if key in unique:  # listed twice (e.g. `dependencies` and `orchestration.dependencies`): required wins
                unique[key]["required"] = unique[key]["required"] or dependency["required"]
            else:
                unique[key] = dependency
        return list(unique.values())

    def _dependency(self, kind: str, name: str, spec: dict) -> dict:
        return {
            "kind": kind, "name": name,
            "required": spec.get("required", True), "enabled": spec.get("enabled", True),
            "version_range": spec.get("versionRange"), "version": spec.get("version"),
            "purpose": spec.get("purpose") or spec.get("description") or "",
        }

    # --- tier statements and swaps ----------------------------------------------------------------

    def _feasibility_sections(self):
        """(`pointer parts`, kind, name, spec) of every per-dependency deployment declaration."""
        raw = self.raw
        blocks = ((["tier_feasibility", "dependencies"], raw.get("tier_feasibility", {}).get("dependencies", {})),
                  (["deployment", "dependencies"], raw.get("deployment", {}).get("dependencies", {})))
        for parts, block in blocks:
            for kind, section in (("resource", "resources"), ("scenario", "scenarios")):
                for name, spec in block.get(section, {}).items():
                    inner = spec.get("deployment", {})
                    yield [*parts, section, name], kind, name, {**inner, **spec}

    def declared_support(self) -> dict:
        support: dict[str, dict] = {}
        for parts, kind, name, spec in self._feasibility_sections():
            for tier_name, statement in spec.get("platform_support", {}).items():
                tier = tier_or_none(tier_name)
                if tier is None:
                    self.warn([*parts, "platform_support", tier_name], f"unknown tier {tier_name!r}; ignored",
                              "unknown_tier")
                    continue
                support.setdefault(entry_key(kind, name), {})[tier] = self._statement(statement)
        return support

    def declared_swaps(self) -> dict:
        swaps: dict[str, list] = {}
        for _parts, kind, name, spec in self._feasibility_sections():
            options = self.swap_options(spec.get("swappable_with", []))
            if options:
                swaps.setdefault(entry_key(kind, name), []).extend(options)
        return swaps

    @staticmethod
    def swap_options(options) -> list[dict]:
        result = []
        for option in options:
            if isinstance(option, str):
                option = {"id": option}
            result.append({"id": option["id"], "relationship": option.get("relationship", ""),
                           "notes": option.get("notes", "")})
        return result

    @staticmethod
    def _statement(statement: dict) -> dict:
        return {
            "supported": statement.get("supported"),
            "score": statement.get("fitness_score"),
            "reason": statement.get("reason") or statement.get("notes") or "",
            "alternatives": list(statement.get("alternatives", [])),
        }

    def own_support(self) -> dict:
        raw = self.raw
        support: dict[str, dict] = {}
        deployment = raw.get("deployment", {})
        for tier_name, spec in deployment.get("tiers", {}).items():
            tier = tier_or_none(tier_name)
            if tier is None:
                self.warn(["deployment", "tiers", tier_name], f"unknown tier {tier_name!r}; ignored", "unknown_tier")
                continue
            supported, score = _TIER_STATUS.get(spec.get("status"), (None, None))
            if "fitness_score" in spec:
                score = spec["fitness_score"]
            reason = spec.get("notes") or ", ".join(spec.get("constraints", []))
            support[tier] = {"supported": supported, "score": score, "reason": reason, "alternatives": []}
        for tier_name, by_os in deployment.get("profiles", {}).items():
            tier = tier_or_none(tier_name)
            if tier is None:
                self.warn(["deployment", "profiles", tier_name], f"unknown tier {tier_name!r}; ignored",
                          "unknown_tier")
                continue
            statement = self._profile_statement(tier, by_os)
            if statement is not None:
                support[tier] = statement
        return support

    @staticmethod
    def _profile_statement(tier: str, by_os: dict) -> dict | None:
        """A tier statement from resource.json's per-OS `deployment.profiles.<tier>`: the mean of the OSes' levels."""
        levels, notes = [], []
        for os_name, spec in sorted(by_os.items()):
            support = spec.get("support", "supported")
            levels.append(_SUPPORT_LEVELS.get(support, 0.5))
            detail = spec.get("reason") or "; ".join(spec.get("limitations", []))
            notes.append(f"{support} on {os_name}" + (f" ({detail})" if detail else ""))
        if not levels:
            return None
        score = round(sum(levels) / len(levels), 3)
        return {"supported": any(level > 0 for level in levels), "score": score,
                "reason": f"{tier}: " + "; ".join(notes), "alternatives": []}

    # --- environment and secrets --------------------------------------------------------------------

    def environment_and_secrets(self) -> tuple[dict, list[dict]]:
        raw = self.raw
        env: dict[str, str] = {}
        secrets: dict[str, dict] = {}

        def add(secret: dict) -> None:
            existing = secrets.get(secret["id"])
            if existing is None or _CLASS_RANK[secret["declared_class"]] < _CLASS_RANK[existing["declared_class"]]:
                # The most restrictive declaration of one secret wins (infrastructure over the others).
                secrets[secret["id"]] = secret

        runtime_env = raw.get("runtime", {}).get("env", {})
        for key, value in runtime_env.items():
            if SECRET_KEY.search(key.upper()):
                add(self._secret(key, "infrastructure", "runtime.env", ["runtime", "env", key],
                                 description=f"{self.file.name}'s own {key} (the server's credential)"))
            else:
                env[key] = _text(value)
        environment = raw.get("environment", {})
        for key, value in environment.items():
            if SECRET_KEY.search(key.upper()):
                add(self._secret(key, "per_install_generated", "environment", ["environment", key],
                                 description=f"{self.file.name}'s {key}"))
            else:
                env.setdefault(key, _text(value))
        credentials = raw.get("credentials", {})
        for section in ("env", "descriptors"):
            for index, item in enumerate(credentials.get(section, [])):
                descriptor = {"env": item} if isinstance(item, str) else item
                declared = VROOLI_CLASSIFICATION[descriptor.get("classification", "user")]
                remote = {"source": credentials["secret_ref"]} if credentials.get("secret_ref") else None
                add(self._secret(descriptor["env"], declared, "credentials", ["credentials", section, index],
                                 label=descriptor.get("label"), description=descriptor.get("description"),
                                 required=descriptor.get("required", True),
                                 validation=descriptor.get("validation_pattern"),
                                 hint=descriptor.get("default_hint") or descriptor.get("obtain_url"), remote=remote))
        for tier_name, spec in raw.get("deployment", {}).get("tiers", {}).items():
            for index, item in enumerate(spec.get("secrets", [])):
                name = item["secret_id"].upper().replace("-", "_").replace(".", "_")
                add(self._secret(name, VROOLI_CLASSIFICATION[item.get("classification", "user")],
                                 "deployment.tiers", ["deployment", "tiers", tier_name, "secrets", index],
                                 label=item.get("label"), description=item.get("description"),
                                 required=item.get("required", True), hint=item.get("default_hint")))
        for index, item in enumerate(raw.get("secrets", [])):
            declared = item.get("class") or VROOLI_CLASSIFICATION[item.get("classification", "user")]
            target = {"type": "file", "name": item["file"]} if item.get("file") else \
                {"type": "env", "name": item.get("env") or item["id"]}
            add(self._secret(item["id"], declared, "secrets", ["secrets", index], target=target,
                             label=item.get("label"), description=item.get("description"),
                             required=item.get("required", True), validation=item.get("validation_pattern"),
                             hint=item.get("default_hint"), generator=item.get("generator"),
                             remote=item.get("remote")))
        exports = raw.get("environment_exports", {})
        derived = exports.get("derived", {})
        exported = set(exports.get("from_runtime_env", []))
        for secret in secrets.values():
            secret["derived"] = _derived_from(secret["id"], derived)
            # Handed to the scenarios that use this entry (Vrooli's `from_runtime_env`, or carried by a derived export).
            secret["exported"] = secret["id"] in exported or bool(secret["derived"])
        return env, sorted(secrets.values(), key=lambda secret: secret["id"])

    def _secret(self, secret_id: str, declared_class: str, source: str, parts, *, target: dict | None = None,
                label=None, description=None, required: bool = True, validation=None, hint=None, generator=None,
                remote=None) -> dict:
        return {
            "id": secret_id, "target": target or {"type": "env", "name": secret_id},
            "declared_class": declared_class, "source": source,
            "pointer": pointer_of(parts), "path": self.file.path,
            "label": label or "", "description": description or "", "required": required,
            "validation": validation or "", "hint": hint or "", "generator": generator, "remote": remote,
        }

    # --- what the manifest needs: ports, components, health -------------------------------------------

    def ports(self) -> list[dict]:
        raw = self.raw
        found = []
        if self.file.format == "resource.json":
            for port in raw.get("ports", []):
                if port.get("name"):
                    found.append({"name": port["name"], "env_var": "", "range": None,
                                  "port": port.get("host") or port.get("container")})
            return found
        for name, spec in raw.get("ports", {}).items():
            port_range = None
            if spec.get("range"):
                low, high = (int(part) for part in spec["range"].split("-"))
                port_range = {"min": min(low, high), "max": max(low, high)}
            fixed = spec.get("port")
            found.append({"name": name, "env_var": spec.get("env_var", ""), "range": port_range,
                          "port": int(fixed) if isinstance(fixed, int) or str(fixed or "").isdigit() else None})
        return found

    def components(self, ports: list[dict]) -> list[dict]:
        declared = self.raw.get("components", {})
        found = []
        if declared:
            for component_id, spec in declared.items():
                build = spec.get("build", {})
                found.append({
                    "id": component_id, "role": spec.get("role", component_id),
                    "build": {"type": _BUILD_TYPES.get(build.get("kind", ""), "custom"),
                              "source_dir": f"{self.base}/{build.get('dir', component_id)}".rstrip("/")},
                    "port": spec.get("run", {}).get("port", ""),
                })
            return found
        # Older scenarios name no components; their `ports` say what runs: an `api` (Go) and a `ui`.
        names = {port["name"] for port in ports}
        if self.file.kind == "scenario":
            if "api" in names:
                found.append({"id": "api", "role": "api", "build": {"type": "go", "source_dir": f"{self.base}/api"},
                              "port": "api"})
            if "ui" in names:
                found.append({"id": "ui", "role": "ui", "build": {"type": "npm", "source_dir": f"{self.base}/ui"},
                              "port": "ui"})
        return found

    def health(self, ports: list[dict]) -> list[dict]:
        raw = self.raw
        by_env = {port["env_var"]: port["name"] for port in ports if port["env_var"]}
        by_number = {port["port"]: port["name"] for port in ports if port["port"]}
        checks = []
        if self.file.format == "resource.json":
            for check in raw.get("health_checks", []):
                checks.append(self._check(check.get("type", "tcp"), check.get("target", ""), by_env, by_number,
                                          interval_ms=int(check.get("interval_seconds", 10) * 1000),
                                          timeout_ms=int(check.get("timeout_seconds", 5) * 1000),
                                          name=check.get("kind", "")))
        else:
            for check in raw.get("lifecycle", {}).get("health", {}).get("checks", []):
                checks.append(self._check(check.get("type", "http"), check.get("target", ""), by_env, by_number,
                                          interval_ms=check.get("interval", 30000),
                                          timeout_ms=check.get("timeout", 5000), name=check.get("name", "")))
        return checks

    @staticmethod
    def _check(kind: str, target: str, by_env: dict, by_number: dict, *, interval_ms: int, timeout_ms: int,
               name: str) -> dict:
        port_name, path = "", ""
        env_match = re.search(r"\$\{(\w+)\}", target)
        if env_match:
            port_name = by_env.get(env_match.group(1), "")
        text = target if "://" in target else f"tcp://{target}"
        try:
            parts = urlsplit(re.sub(r"\$\{\w+\}", "0", text))
            port_name = port_name or by_number.get(parts.port, "")
        except ValueError:  # a target that is not a URL ("[::1" …): no port to match, no path to check
            parts = urlsplit("tcp://unknown")
        if kind == "http":
            path = parts.path or "/"
        return {"name": name, "type": kind if kind in ("http", "tcp", "command") else "tcp", "path": path,
                "port_name": port_name, "interval_ms": interval_ms, "timeout_ms": timeout_ms}


def _derived_from(name: str, derived: dict) -> list[str]:
    """Exported variables whose template carries `name`, directly or through another (DATABASE_URL ← POSTGRES_URL)."""
    carrying = {name}
    changed = True
    while changed:
        changed = False
        for export, spec in derived.items():
            template = spec.get("template", "")
            if export not in carrying and any("${" + item + "}" in template for item in carrying):
                carrying.add(export)
                changed = True
    return sorted(carrying - {name})


_CLASS_RANK = {"infrastructure": 0, "remote_fetch": 1, "user_prompt": 2, "per_install_generated": 3}


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
