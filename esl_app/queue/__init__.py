"""Inbound queues (ACD): configuration in Postgres, live state and atomic offers in Redis.

See docs/queues.md."""

from .caller import QueueOutcome, enqueue
from .config import AcdConfig, AgentConfig, QueueConfig, Tier, load_config, save_config
from .service import Estimate, Offer, QueueError, QueueService, current_service

__all__ = [
    "AcdConfig", "AgentConfig", "Estimate", "Offer", "QueueConfig", "QueueError", "QueueOutcome", "QueueService",
    "Tier", "current_service", "enqueue", "load_config", "save_config",
]  # fmt: skip
