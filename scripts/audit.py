"""`make audit`: known vulnerabilities in the pinned requirements, as installed in .venv (pip-audit).

Fails (exit 1) on a vulnerability that has a fixed release — bump the pin in requirements*.txt to one of
the fix versions it names. One with no fix yet is reported and does not fail. When the vulnerability
service (PyPI's JSON API) cannot be reached, the audit fails with exit 3, or with `--allow-offline` says
so loudly and exits 0: CI on a machine without network still runs the tests, never hides a finding.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

NETWORK_MARKERS = ("ConnectionError", "Max retries exceeded", "NameResolutionError", "Temporary failure in name",
                   "timed out", "Connection refused", "Network is unreachable", "ServiceError")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--allow-offline", action="store_true",
                        help="exit 0 (with a warning) when the vulnerability service is unreachable")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        report_path = Path(directory) / "audit.json"
        run = subprocess.run(
            [sys.executable, "-m", "pip_audit", "--skip-editable", "--progress-spinner", "off", "--desc", "off",
             "--format", "json", "--output", str(report_path), "--timeout", "30"],
            capture_output=True, text=True)
        report = json.loads(report_path.read_text()) if report_path.exists() and report_path.stat().st_size else None
    if report is None:
        output = run.stdout + run.stderr
        if any(marker in output for marker in NETWORK_MARKERS):
            print("pip-audit: the vulnerability service (PyPI) is unreachable; nothing was audited.\n"
                  + output.strip().splitlines()[-1], file=sys.stderr)
            if args.allow_offline:
                print("AUDIT SKIPPED (offline): run `make audit` where PyPI is reachable.", file=sys.stderr)
                return 0
            return 3
        print(output, file=sys.stderr)
        return run.returncode or 1
    fixable, unfixed = [], []
    for dependency in report["dependencies"]:
        for vulnerability in dependency.get("vulns", []):
            line = (f"{dependency['name']}=={dependency['version']}: {vulnerability['id']}"
                    f" (aliases {', '.join(vulnerability.get('aliases', [])) or 'none'})")
            if vulnerability.get("fix_versions"):
                fixable.append(f"{line} — fixed in {', '.join(vulnerability['fix_versions'])}")
            else:
                unfixed.append(f"{line} — no fixed release yet")
    audited = len(report["dependencies"])
    for line in unfixed:
        print(f"warning: {line}")
    if fixable:
        print(f"pip-audit: {len(fixable)} known vulnerabilities with a fix in {audited} packages; bump these pins:")
        for line in fixable:
            print(f"  {line}")
        return 1
    print(f"pip-audit: {audited} packages audited, no known vulnerability with a fix available"
          + (f" ({len(unfixed)} without a fix yet, listed above)" if unfixed else "") + ".")
    return 0


if __name__ == "__main__":
    sys.exit(main())
