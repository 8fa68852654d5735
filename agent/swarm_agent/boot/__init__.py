"""The VM boot script's parts: fetch through a verified local cache, unpack safely, run, report.

`swarm_agent.commands.boot` wires them together; nothing here imports Django.
"""
