"""The errors embedded services raise.

In a module of their own because every other module of the package raises
them, and callers catch them without caring which service failed.
"""

from __future__ import annotations


class EmbeddedServiceError(RuntimeError):
    """An embedded service could not be started or stopped."""


class ServiceAlreadyRunningError(EmbeddedServiceError):
    """Another server is already running on the requested data directory."""


class PortConflict(EmbeddedServiceError):
    """The server failed because a port chosen as free was taken meanwhile.

    Raised inside a start only, where it makes the start try again on new
    ports; callers never see it.
    """
