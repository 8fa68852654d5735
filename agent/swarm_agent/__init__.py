"""Swarm agent: the drone daemon (`swarm-agent run`), the VM boot script
(`swarm-agent boot`) and the operator CLI (`swarmctl`).

This package never imports Django: it talks to the control plane over HTTP
and WebSocket only, and installs on its own with `pip install ./agent`.
"""
__version__ = "0.1.0"
