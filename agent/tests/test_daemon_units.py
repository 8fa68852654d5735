"""The agent package on its own: no Django, drone type detection, metrics, plugin loading."""
import subprocess
import sys

from swarm_agent import host_facts
from swarm_agent.daemon import AgentConfig


def test_agent_never_imports_django():
    code = ("import sys, swarm_agent.daemon, swarm_agent.commands.run, swarm_agent.plugins, swarm_agent.cli_agent;"
            "assert not [m for m in sys.modules if m == 'django' or m.startswith('django.')], 'django imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_detection_maps_systemd_detect_virt(monkeypatch):
    monkeypatch.setattr(host_facts.shutil, "which", lambda name: "/bin/true")
    for virt, expected in (("lxc", "lxc"), ("kvm", "qemu"), ("qemu", "qemu"), ("none", "bare-metal"),
                           ("docker", "unknown"), ("vmware", "unknown")):
        monkeypatch.setattr(host_facts.subprocess, "run",
                            lambda *a, virt=virt, **k: subprocess.CompletedProcess(a, 0, stdout=f"{virt}\n"))
        assert host_facts.detect_drone_type() == expected


def test_detection_falls_back_to_proc_and_dmi(monkeypatch, tmp_path):
    monkeypatch.setattr(host_facts.shutil, "which", lambda name: None)
    files = {"/proc/1/environ": b"PATH=/bin\0container=lxc\0", "/sys/class/dmi/id/sys_vendor": b"",
             "/proc/cpuinfo": b"flags: fpu\n"}
    real_read_bytes = host_facts.Path.read_bytes

    def fake_read_bytes(path):
        return files[str(path)] if str(path) in files else real_read_bytes(path)

    monkeypatch.setattr(host_facts.Path, "read_bytes", fake_read_bytes)
    monkeypatch.setattr(host_facts, "_read", lambda path: files.get(path, b"").decode())
    assert host_facts.detect_drone_type() == "lxc"
    files["/proc/1/environ"] = b"PATH=/bin\0"
    files["/sys/class/dmi/id/sys_vendor"] = b"QEMU\n"
    assert host_facts.detect_drone_type() == "qemu"
    files["/sys/class/dmi/id/sys_vendor"] = b"Dell Inc.\n"
    assert host_facts.detect_drone_type() == "bare-metal"
    files["/proc/cpuinfo"] = b"flags: fpu hypervisor\n"
    assert host_facts.detect_drone_type() == "unknown"


def test_metrics_come_from_proc(tmp_path):
    sampler = host_facts.MetricsSampler(tmp_path)
    metrics = sampler.sample()
    assert metrics["memory_total_bytes"] > 0 and 0 <= metrics["memory_percent"] <= 100
    assert metrics["disk_total_bytes"] > 0 and "load_1" in metrics and metrics["cpu_count"] >= 1


def test_plugins_are_loaded_from_the_package(monkeypatch, tmp_path):
    import types

    from swarm_agent import plugins

    module = types.ModuleType("swarm_agent.plugins.zz_probe")

    class Probe(plugins.AgentPlugin):
        name = "probe"

        def heartbeat_fields(self):
            return {"running_build_ids": [7]}

    module.plugin_factory = Probe
    monkeypatch.setitem(sys.modules, "swarm_agent.plugins.zz_probe", module)
    monkeypatch.setattr(plugins.pkgutil, "iter_modules",
                        lambda path: [types.SimpleNamespace(name="zz_probe")])
    config = AgentConfig(server="http://127.0.0.1:1", state_dir=tmp_path, name="unit")
    daemon = types.SimpleNamespace(config=config)
    loaded = plugins.load_plugins(daemon)
    assert [plugin.name for plugin in loaded] == ["probe"]
    assert loaded[0].daemon is daemon and loaded[0].heartbeat_fields() == {"running_build_ids": [7]}
    assert plugins.load_plugins(daemon, disabled={"zz_probe"}) == []
    assert config.ws_url == "ws://127.0.0.1:1/ws/agent/"
