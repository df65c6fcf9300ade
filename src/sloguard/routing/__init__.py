"""The /route controller: worker registry, health checks and forwarding.

``create_controller_app(state_dir)`` builds the Starlette app that
``sloguard serve`` runs behind :class:`sloguard.SLOGuard`.
"""

from sloguard.routing.app import Controller, create_controller_app
from sloguard.routing.demo import LatencyProfile, demo_worker_app
from sloguard.routing.health import HealthChecker
from sloguard.routing.registry import Worker, WorkerRegistry
from sloguard.routing.workers_file import WorkerSpec, load_workers_file

__all__ = [
    "Controller",
    "HealthChecker",
    "LatencyProfile",
    "Worker",
    "WorkerRegistry",
    "WorkerSpec",
    "create_controller_app",
    "demo_worker_app",
    "load_workers_file",
]
