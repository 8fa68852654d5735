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
