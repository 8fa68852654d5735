"""The operator console: terminal round trip, and the topology's fan-out to a real browser.

    .venv/bin/python bench/console.py [--keystrokes 1000] [--drones 2000] [--rate 500] [--duration 20]
                                      [--screenshots docs/]

1. Terminal round trip: a real `swarm-agent run` and a real uvicorn server; a
   staff user's WebSocket on `/ws/terminal/<drone>/` runs `cat > /dev/null` in
   the agent's PTY, then types `--keystrokes` single characters one at a time,
   each timed from the keystroke sent to its echo received (browser socket →
   server → channel layer → agent's socket → PTY → back). The floor is a direct
   PTY echo on this machine: a byte written to a PTY master running the same
   `cat`, until its echo is read back. Target: p99 < 30 ms.
2. Topology fan-out: `--drones` drones with real tokens heartbeat at `--rate`
   per second in total (the lean load generator, bench/_support/loadgen.py),
   in two rounds of: nobody watching, then Debian's Chromium (playwright) on
   the topology page. The page measures its own frames per second and the update
   lag from a heartbeat reaching the server to the frame that draws it (the
   server's receive time travels in the frame; browser and server share the
   clock). The fan-out's server CPU per heartbeat is the server CPU per
   heartbeat with the page open minus the same without it (on a busy machine
   that difference is within the noise, so the CPU of what the fan-out adds —
   building a frame, msgpack for the channel layer, JSON for the browser — is
   also measured on its own). Targets: lag p99 < 1 s, ≥ 30 frames per second.

With `--screenshots DIR` it also saves the topology (the fan-out's fleet, in
groups, a few drones on the ladder) and the terminal page as PNGs.
The last line of output is the JSON result.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pty
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "_support"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import BASE_DIR, Server, log, percentile, prepare_environment  # noqa: E402

import loadgen  # noqa: E402
from cpu import tree_seconds  # noqa: E402

CHROMIUM = os.environ.get("SWARM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def summary(samples_ms: list[float]) -> dict:
    return {"count": len(samples_ms), "p50_ms": round(percentile(samples_ms, 0.5), 3),
            "p99_ms": round(percentile(samples_ms, 0.99), 3), "mean_ms": round(statistics.fmean(samples_ms), 3),
            "max_ms": round(max(samples_ms), 3)}


# --- the terminal ------------------------------------------------------------------------------------


def start_agent(server_url: str, workdir: Path, name: str) -> subprocess.Popen:
    from drones.services import join_token_issue

    _, join = join_token_issue(name=f"join-{name}")
    argv = [sys.executable, "-m", "swarm_agent.cli_agent", "run", "--server", server_url, "--state-dir",
            str(workdir / name), "--name", name, "--join-token", join, "--log-level", "WARNING",
            "--terminal-shell", "/bin/bash", "--disable-plugin", "builds"]
    log_file = open(workdir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen(argv, cwd=BASE_DIR, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)


def wait_connected(name: str, timeout: float = 60) -> None:
    from drones.models import Drone

    deadline = time.monotonic() + timeout
    while not Drone.objects.filter(name=name, ws_connected=True).exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the agent {name} never connected its WebSocket")
        time.sleep(0.2)


def staff_cookie() -> str:
    from django.contrib.auth import get_user_model
    from django.test import Client

    user = get_user_model().objects.create_superuser("bench-operator", "bench@example.test", "bench-password-1")
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def terminal_round_trips(url: str, drone: str, cookie: str, keystrokes: int) -> list[float]:
    from websockets.asyncio.client import connect

    samples = []
    async with connect(f"{url.replace('http://', 'ws://')}/ws/terminal/{drone}/?cols=120&rows=40",
                       additional_headers={"Cookie": f"sessionid={cookie}"}, max_size=None) as socket:
        while True:
            message = await socket.recv()
            if isinstance(message, str) and json.loads(message)["type"] == "opened":
                break
        await socket.send(b"exec cat > /dev/null\r")
        await asyncio.sleep(1.0)
        await _drain(socket)
        for index in range(keystrokes):
            key = b"abcdefghijklmnopqrstuvwxyz"[index % 26:index % 26 + 1]
            started = time.perf_counter()
            await socket.send(key)
            received = b""
            while key not in received:
                message = await socket.recv()
                if isinstance(message, bytes):
                    received += message
            samples.append((time.perf_counter() - started) * 1000)
            if index % 80 == 79:
                await socket.send(b"\r")  # keep the line short (the PTY's line buffer)
                await asyncio.sleep(0.02)
                await _drain(socket)
    return samples


async def _drain(socket) -> None:
    while True:
        try:
            await asyncio.wait_for(socket.recv(), 0.2)
        except asyncio.TimeoutError:
            return


def pty_echo_floor(keystrokes: int) -> list[float]:
    """The same echo straight from a PTY on this machine: the floor no relay can beat."""
    master, slave = pty.openpty()
    process = subprocess.Popen(["cat"], stdin=slave, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    os.close(slave)
    samples = []
    try:
        time.sleep(0.2)
        for index in range(keystrokes):
            key = b"abcdefghijklmnopqrstuvwxyz"[index % 26:index % 26 + 1]
            started = time.perf_counter()
            os.write(master, key)
            received = b""
            while key not in received:
                received += os.read(master, 1024)
            samples.append((time.perf_counter() - started) * 1000)
            if index % 80 == 79:
                os.write(master, b"\n")
                time.sleep(0.02)
                os.read(master, 4096)
    finally:
        process.kill()
        os.close(master)
    return samples


# --- the topology --------------------------------------------------------------------------------------


def shape_fleet(count: int) -> None:
    """Types and labels in four groups, a few drones on the ladder, paused, draining or offline (for the eye)."""
    from django.utils import timezone

    from drones.models import Drone, EscalationEvent

    groups = [("lxc", ["linux", "x86_64"]), ("qemu", ["gpu"]), ("bare-metal", ["arm64"]), ("lxc", ["build"])]
    ids = list(Drone.objects.filter(name__startswith="bench-").order_by("pk").values_list("pk", flat=True))
    for index, (drone_type, labels) in enumerate(groups):
        Drone.objects.filter(pk__in=ids[index::len(groups)]).update(drone_type=drone_type, labels=labels)
    now = timezone.now()
    Drone.objects.filter(pk__in=ids).update(registered_at=now - timedelta(hours=2))
    for step, pk in enumerate(ids[7:7 + 3 * 37:37]):
        level = 1 + step % 3
        Drone.objects.filter(pk=pk).update(escalation_level=level)
        EscalationEvent.objects.create(drone_id=pk, level=level, action=["restart_service", "hard_restart",
                                                                         "reboot_container"][level - 1],
                                       result="sent", detail="bench: shown on the topology", at=now)
    Drone.objects.filter(pk__in=ids[11:count:97]).update(status="paused")
    Drone.objects.filter(pk__in=ids[13:count:89]).update(status="draining")
    Drone.objects.filter(pk__in=ids[17:count:83]).update(status="offline")


def paced_in_thread(port: int, requests: list[bytes], rate: float, duration: float, check) -> dict:
    """The paced load generator on its own thread (Playwright keeps an event loop on this one)."""
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(loadgen.run(loadgen.paced(
        "127.0.0.1", port, requests, rate=rate, duration=duration, check=check))))
    worker.start()
    worker.join(duration + 120)
    return outcome


def frame_encoding_cost(frames: int = 400, per_frame: int = 125) -> float:
    """CPU (µs) per heartbeat of what the fan-out adds once someone watches: building a frame of
    `per_frame` heartbeats, the channel layer's msgpack, the consumer's JSON (measured in this process)."""
    import msgpack

    from drones.topology.feed import TopologyBatch

    started = time.process_time()
    for index in range(frames):
        batch = TopologyBatch()
        for drone_id in range(per_frame):
            batch.heartbeat(index * per_frame + drone_id, time.time())
        frame = batch.frame()
        msgpack.unpackb(msgpack.packb({"type": "topology.frame", "frame": frame}))
        json.dumps(frame)
    return round((time.process_time() - started) * 1e6 / (frames * per_frame), 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keystrokes", type=int, default=1000)
    parser.add_argument("--drones", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=500.0, help="heartbeats per second, in total")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of each paced phase")
    parser.add_argument("--screenshots", type=Path, help="save topology.png and terminal.png here")
    args = parser.parse_args()

    os.environ.setdefault("SWARM_CACHE_PREFIX", f"benchconsole{os.getpid()}")
    os.environ.setdefault("SWARM_CHANNELS_PREFIX", f"benchconsole{os.getpid()}")
    os.environ.update({"SWARM_LOG_LEVEL": "WARNING", "SWARM_DB_POOL": "1",
                       "SWARM_DRONE_HEARTBEAT_INTERVAL": str(max(1.0, args.drones / args.rate))})
    prepare_environment("console")
    from heartbeats import create_fleet, heartbeat_requests

    def heartbeat_answered(response) -> bool:  # paused and draining drones are answered `pause` / `drain`
        return response.status == 200

    workdir = Path(tempfile.mkdtemp(prefix="swarm-bench-console-"))
    server = Server(workers=1, log_path=workdir / "uvicorn.log")
    agent = None
    result: dict = {"benchmark": "console", "cpu_count": os.cpu_count()}
    try:
        cookie = staff_cookie()
        log("terminal: starting a real agent")
        agent = start_agent(server.url, workdir, "bench-terminal")
        wait_connected("bench-terminal")
        log(f"terminal: {args.keystrokes} keystrokes through server + agent, then a direct PTY echo")
        relayed = asyncio.run(terminal_round_trips(server.url, "bench-terminal", cookie, args.keystrokes))
        floor = pty_echo_floor(args.keystrokes)
        result["terminal"] = {"relayed": summary(relayed), "direct_pty_floor": summary(floor),
                              "p99_ratio_to_floor": round(percentile(relayed, 0.99) / max(percentile(floor, 0.99),
                                                                                          1e-6), 1),
                              "target_p99_ms": 30, "target_met": percentile(relayed, 0.99) < 30}

        log(f"topology: {args.drones} drones with tokens")
        tokens = create_fleet(args.drones)
        shape_fleet(args.drones)
        requests = heartbeat_requests(tokens)
        loadgen.run(loadgen.closed_loop("127.0.0.1", server.port, requests, concurrency=32, duration=120,
                                        check=heartbeat_answered, once=True))
        from playwright.sync_api import sync_playwright

        terminal_drone_id = _drone_id("bench-terminal")  # the ORM refuses to run under Playwright's event loop
        phases = {"unwatched": [], "watched": []}
        page_stats = {}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.add_cookies([{"name": "sessionid", "value": cookie, "url": server.url}])
            # The admin's navigation sidebar closed: the screenshots show the page, not the menu.
            context.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
            page = context.new_page()
            # Two rounds of: nobody watching, then Chromium on the page (alternating evens out the machine's noise).
            for round_number in (1, 2):
                for phase in ("unwatched", "watched"):
                    if phase == "watched":
                        page.goto(f"{server.url}/admin/drones/drone/topology/")
                        page.wait_for_function(f"() => window.swarmTopology && swarmTopology.drones() >= {args.drones}",
                                               timeout=60_000)
                        page.wait_for_timeout(1500)
                        page.evaluate("swarmTopology.resetStats()")
                    else:
                        page.goto("about:blank")
                        time.sleep(1.0)
                    log(f"topology round {round_number}: {args.rate:g} heartbeats/s for {args.duration:g} s, {phase}")
                    before = tree_seconds(server.process.pid)
                    outcome = paced_in_thread(server.port, requests, args.rate, args.duration, heartbeat_answered)
                    outcome["server_cpu_seconds"] = tree_seconds(server.process.pid) - before
                    if phase == "watched":
                        outcome["page"] = page.evaluate("swarmTopology.stats()")
                    phases[phase].append(outcome)
            page_stats = phases["watched"][-1]["page"]
            if args.screenshots:
                args.screenshots.mkdir(parents=True, exist_ok=True)
                paced_thread = threading.Thread(target=paced_in_thread, args=(server.port, requests, args.rate, 6,
                                                                              heartbeat_answered))
                paced_thread.start()
                page.wait_for_timeout(3500)
                page.screenshot(path=str(args.screenshots / "topology.png"), full_page=True)
                paced_thread.join()
                page.goto(f"{server.url}/admin/drones/drone/{terminal_drone_id}/terminal/")
                page.wait_for_function("() => document.getElementById('terminal-status').textContent.startsWith('connected')")
                page.click("#terminal-box")
                page.wait_for_function("() => swarmTerminal.text().includes('#') || swarmTerminal.text().includes('$')")
                page.keyboard.type("uname -sr; uptime; df -h / | tail -1; echo \"hello from $(hostname)\"\n")
                page.wait_for_function("() => swarmTerminal.text().split('\\n').some(l => /^hello from [^$]+$/.test(l.trim()))",
                                       timeout=30_000)
                page.wait_for_timeout(500)
                page.screenshot(path=str(args.screenshots / "terminal.png"))
            browser.close()

        def per_heartbeat(runs) -> float:
            return round(sum(run["server_cpu_seconds"] for run in runs) * 1000
                         / max(1, sum(run.get("requests", 0) for run in runs)), 3)

        def rates(runs) -> dict:
            return {"per_second": [run.get("per_second") for run in runs], "p99_ms": [run.get("p99_ms") for run in runs],
                    "errors": sum(run.get("errors", 0) for run in runs), "server_cpu_ms_per_heartbeat": per_heartbeat(runs)}

        unwatched, watched = rates(phases["unwatched"]), rates(phases["watched"])
        result["topology"] = {
            "drones": args.drones, "offered_per_second": args.rate, "unwatched": unwatched, "watched": watched,
            "fan_out_server_cpu_ms_per_heartbeat": round(watched["server_cpu_ms_per_heartbeat"]
                                                         - unwatched["server_cpu_ms_per_heartbeat"], 3),
            "frame_encoding_cpu_us_per_heartbeat": frame_encoding_cost(),
            "page": page_stats,
            "page_round_1": phases["watched"][0]["page"],
            "target_met": bool(page_stats.get("lag_p99") is not None and page_stats["lag_p99"] < 1.0
                               and (page_stats.get("fps_median") or 0) >= 30),
        }
        result["load_average_at_end"] = os.getloadavg()
    finally:
        if agent is not None and agent.poll() is None:
            os.killpg(agent.pid, signal.SIGTERM)
            agent.wait(20)
        from django.db import connections

        connections.close_all()
        server.stop()
    print(json.dumps(result))
    return 0


def _drone_id(name: str) -> int:
    from drones.models import Drone

    return Drone.objects.get(name=name).pk


if __name__ == "__main__":
    sys.exit(main())
