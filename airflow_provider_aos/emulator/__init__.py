"""Local emulator of the AOS identity service and Graph API (audit, backup and scan jobs, M365 restore),
for tests, benchmarks and demos.

Standalone on purpose: it must never import Airflow, so it starts fast as a subprocess.
"""

from .identity import ALL_SCOPES
from .server import AosEmulator, EmulatorConfig

__all__ = ["ALL_SCOPES", "AosEmulator", "EmulatorConfig"]
