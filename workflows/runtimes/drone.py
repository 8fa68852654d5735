"""The `drone` runtime: executions claimed by a connected drone like a build, booted there in its sandbox.

Provisioning queues the execution (`claims_later`) instead of starting it:
drones whose labels match are offered it over their WebSocket, one claims it
(workflows/services/drone_executions.py), and its agent runs the same
`swarm-agent boot` under the same detached supervisor as the `process`
runtime (swarm_agent/sandbox.py, swarm_agent/plugins/executions.py). The
control plane never runs anything of it: `is_alive()` cannot tell from here
(the drone's lease says it, in `sweep()`), `cancel()` tells the drone.
"""
from __future__ import annotations

from workflows.runtimes.base import ExecutionRuntime, RuntimeAvailability, RuntimeStartFailed, register_runtime


@register_runtime("drone")
class DroneRuntime(ExecutionRuntime):
    """Queues executions for the fleet; the claiming drone starts, the lease sweep watches."""

    claims_later = True

    def enqueue(self, execution) -> None:
        from workflows.services.drone_executions import drone_execution_enqueue

        drone_execution_enqueue(execution=execution)

    def start(self, execution, metadata_url: str, token: str) -> dict:
        raise RuntimeStartFailed("drone executions are started by the drone that claims them")

    def cancel(self, execution) -> None:
        from workflows.services.drone_executions import drone_execution_stop

        drone_execution_stop(execution=execution)

    def availability(self) -> RuntimeAvailability:
        """Always able to queue (a drone may connect later); `/readyz` shows how many could take work now."""
        from workflows.services.drone_executions import drones_connected_count

        return RuntimeAvailability(True, details={"drones_connected": drones_connected_count()})

    def sweep(self) -> dict:
        from workflows.services.drone_executions import drone_executions_sweep

        return drone_executions_sweep()
