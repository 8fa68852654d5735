"""Fixtures of the builds tests: default queues (flushed by transactional tests) and helpers."""
import pytest


@pytest.fixture(autouse=True)
def default_queues(request):
    """The `default` and `test` queues the data migration ships."""
    if "db" not in request.fixturenames and "transactional_db" not in request.fixturenames \
            and not request.node.get_closest_marker("django_db"):
        yield
        return
    request.getfixturevalue("transactional_db" if _transactional(request) else "db")
    from builds.services import queues_ensure_defaults

    queues_ensure_defaults()
    yield


def _transactional(request) -> bool:
    marker = request.node.get_closest_marker("django_db")
    return bool(marker and marker.kwargs.get("transaction")) or "transactional_db" in request.fixturenames \
        or "live_url" in request.fixturenames


# --- a live server with short build timings, and real agents -----------------

#: Short protocol timings so faults show up in seconds (the server reads them at start).
BUILD_SERVER_SETTINGS = {
    "SWARM_BUILD_LEASE_SECONDS": "4",
    "SWARM_BUILD_UPDATE_INTERVAL": "1",
    "SWARM_BUILD_CANCEL_GRACE": "2",
    "SWARM_BUILD_ACK_TIMEOUT": "15",
    "SWARM_BUILD_RETRY_AVOID_SECONDS": "120",
    "SWARM_DRONE_HEARTBEAT_INTERVAL": "2",
}


@pytest.fixture(scope="session")
def builds_server_process(subprocess_environment, tmp_path_factory):
    """A uvicorn server for build tests, with short leases and intervals."""
    from conftest import LiveServer

    env = dict(subprocess_environment, **BUILD_SERVER_SETTINGS)
    server = LiveServer(env, tmp_path_factory.mktemp("builds-live") / "uvicorn.log")
    yield server
    server.stop()


@pytest.fixture
def builds_live_url(builds_server_process, transactional_db, settings):
    """Base URL of the build test server; the test process shares its timings."""
    for name, value in BUILD_SERVER_SETTINGS.items():
        setattr(settings, name, int(value))
    return builds_server_process.url


@pytest.fixture
def build_agent(builds_live_url, tmp_path):
    """Start real `swarm-agent run` processes: `build_agent(name, labels=[...], capacity=1)`."""
    from drones.services import join_token_issue
    from drones.tests.conftest import AgentProcess

    agents = []

    def start(name: str, *, labels=None, capacity: int = 1, env: dict | None = None):
        _, join = join_token_issue(name=f"join-{name}")
        extra = ["--capacity", str(capacity)]
        if labels:
            extra += ["--labels", ",".join(labels)]
        agent_env = {"SWARM_AGENT_BUILD_POLL_INTERVAL": "2", **(env or {})}
        agent = AgentProcess(builds_live_url, tmp_path / f"agent-{name}", name=name, join_token=join,
                             log_path=tmp_path / f"agent-{name}.log", extra=extra, env=agent_env)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.stop()
