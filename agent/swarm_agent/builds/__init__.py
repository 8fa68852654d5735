"""Running builds on a drone: the executor interface, the `process` executor, log streaming and the runner.

Nothing here imports Django; the control plane is reached over HTTP only.
"""
