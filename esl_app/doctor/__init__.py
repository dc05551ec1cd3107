"""``esl-app doctor``: checks of the host and of every configured FreeSWITCH node, each with its fix.

``check_host()`` reads the limits that cap how many calls a host can carry (open files, ephemeral
ports, listen backlog); ``check_node()`` asks one node over its event socket for its session limits,
where its core database lives, how often it sends HEARTBEAT, and whether it still has the shipped
password. ``Report`` gathers the findings; any ``critical`` one makes the command exit non-zero.
"""

from .findings import Finding, Report, Severity
from .host import check_host
from .node import check_node, check_nodes

__all__ = ["Finding", "Report", "Severity", "check_host", "check_node", "check_nodes"]
