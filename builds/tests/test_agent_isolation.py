"""The agent's build code never imports Django (STYLE rule 9): the process boundary stays real."""
import subprocess
import sys

CHECK = """
import importlib, pkgutil, sys
import swarm_agent
for module in pkgutil.walk_packages(swarm_agent.__path__, "swarm_agent."):
    importlib.import_module(module.name)
for name in ("swarm_agent.plugins.builds", "swarm_agent.builds.runner", "swarm_agent.builds.executors.process",
             "swarm_agent.ctl.build"):
    assert name in sys.modules, name
leaked = sorted(name for name in sys.modules if name == "django" or name.startswith("django."))
print(leaked)
sys.exit(1 if leaked else 0)
"""


def test_agent_modules_import_without_django():
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
