"""What one platform's CI build runs: shell steps that cross-compile each service of the manifest.

Only pure functions of the manifest: the same manifest and platform always give the same build config.
"""
from __future__ import annotations

import shlex

from deployments.errors import DeploymentError

#: GOOS/GOARCH of each platform the packager cross-compiles Go for.
GO_TARGETS: dict[str, tuple[str, str]] = {
    "linux-x64": ("linux", "amd64"),
    "linux-arm64": ("linux", "arm64"),
    "win-x64": ("windows", "amd64"),
    "darwin-x64": ("darwin", "amd64"),
    "darwin-arm64": ("darwin", "arm64"),
}

#: Drone labels a build type needs on top of what the request adds (the toolchain the drone must have).
TOOLCHAIN_LABELS: dict[str, list[str]] = {"go": ["go"], "custom": []}


class UnbuildablePlatform(DeploymentError):
    """The manifest cannot be built for a platform (an unknown platform, a build type the packager lacks)."""

    code = "unbuildable"
    status_code = 422


def platform_substitutions(platform: str) -> dict[str, str]:
    """The `{{placeholders}}` a custom command and an output pattern may use."""
    goos, goarch = GO_TARGETS.get(platform, ("", ""))
    return {"platform": platform, "goos": goos, "goarch": goarch, "ext": ".exe" if platform.startswith("win-") else ""}


def substitute(template: str, platform: str) -> str:
    """`template` with every `{{name}}` of `platform_substitutions` filled in."""
    for name, value in platform_substitutions(platform).items():
        template = template.replace("{{" + name + "}}", value)
    return template


def _go_step(service: dict, build: dict, output: str, platform: str) -> str:
    if platform not in GO_TARGETS:
        raise UnbuildablePlatform(f"{service['id']}: no Go target for platform {platform!r} "
                                  f"(known: {', '.join(sorted(GO_TARGETS))}).", field="platforms")
    goos, goarch = GO_TARGETS[platform]
    env = {"CGO_ENABLED": "0", **build.get("env", {}), "GOOS": goos, "GOARCH": goarch}
    assignments = " ".join(f"{name}={shlex.quote(str(value))}" for name, value in sorted(env.items()))
    # The caches live in the workspace (a sandboxed drone has no writable home); -trimpath and an empty
    # build id keep the binary free of the workspace's path, so the same source gives the same bytes.
    return (f'out="$PWD"/{shlex.quote(output)}; mkdir -p "$(dirname "$out")"; '
            f'export GOCACHE="$PWD/.swarm-go/cache" GOPATH="$PWD/.swarm-go/path" GOTOOLCHAIN=local; '
            f"cd {shlex.quote(build['source_dir'])} && env {assignments} go build -trimpath -buildvcs=false "
            f'-ldflags=-buildid= -o "$out" {shlex.quote(build.get("entry_point") or ".")}')


def _custom_step(service: dict, build: dict, output: str, platform: str) -> str:
    command = " ".join(build.get("args") or [])
    if not command.strip():
        raise UnbuildablePlatform(f"{service['id']}: a custom build names its command in build.args.",
                                  field="build")
    return (f'export SWARM_PACKAGE_OUTPUT="$PWD"/{shlex.quote(output)}; mkdir -p "$(dirname "$SWARM_PACKAGE_OUTPUT")"; '
            f"cd {shlex.quote(build['source_dir'])} && {substitute(command, platform)}")


_STEPS = {"go": _go_step, "custom": _custom_step}


def platform_build(manifest: dict, platform: str, *, extra_labels: list[str] = ()) -> dict:
    """The build config (`steps`, `artifacts`, `labels`) of `platform`: one step per service with a `build`."""
    steps, artifacts, labels = [], [], set(extra_labels)
    for service in manifest.get("services", []):
        build = service.get("build")
        if not build:
            continue  # a resource: installed by the target, not built
        binary = service.get("binaries", {}).get(platform)
        if binary is None:
            raise UnbuildablePlatform(f"{service['id']}: the manifest has no binary for {platform!r} "
                                      f"(its platforms: {', '.join(sorted(service.get('binaries', {})))}).",
                                      field="platforms")
        make_step = _STEPS.get(build["type"])
        if make_step is None:
            raise UnbuildablePlatform(f"{service['id']}: build type {build['type']!r} is not built by the packager "
                                      f"(it builds {', '.join(sorted(_STEPS))}).", field="build")
        steps.append(make_step(service, build, binary["path"], platform))
        artifacts.append(binary["path"])
        labels.update(TOOLCHAIN_LABELS[build["type"]])
    if not steps:
        raise UnbuildablePlatform("The manifest has no service with a build block: nothing to build.",
                                  field="services")
    return {"steps": steps, "artifacts": artifacts, "labels": sorted(labels), "timeout": 1800,
            "retry": {"max": 0}}
