"""Worker pools: named pools on their own ports, admission at the door, worker processes under a
supervisor that restarts, drains and reloads them, and their metrics and health endpoints."""

from .admission import Admission, refusal_bytes
from .slots import SlotState, SlotTable
from .worker import PoolWorker

__all__ = ["Admission", "PoolWorker", "SlotState", "SlotTable", "refusal_bytes"]
