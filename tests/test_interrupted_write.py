"""An interrupted write never leaves half a command on the wire (issue 15, part 6), over TCP.

A greenlet killed mid-``sendall`` (``OutboundServer.stop()``, a flow's own ``gevent.Timeout``, the
write timeout) used to drop its reply slot but keep the connection: the next command then continued
inside the cut one's body and every later reply shifted onto the wrong command. Now the connection
closes, so FreeSWITCH sees EOF after the partial bytes and no command is misframed.
"""

from __future__ import annotations

import socket

import gevent
import gevent.socket
import pytest

from esl_app.errors import ConnectionClosed
from esl_app.protocol import commands, switch
from esl_app.transport import Connection

BODY = b"x" * (4 << 20)  # far more than both socket buffers hold
BIG = (
    b"sendmsg\ncall-command: execute\nexecute-app-name: set\ncontent-type: text/plain\n"
    + f"content-length: {len(BODY)}\n\n".encode()
    + BODY
)


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """(application end, switch end) of a loopback TCP connection with small buffers."""
    listener = gevent.socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    app_end = gevent.socket.socket()
    app_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    app_end.connect(listener.getsockname())
    switch_end, _ = listener.accept()
    switch_end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.close()
    return app_end, switch_end


def read_all(sock: socket.socket) -> bytes:
    data = b""
    with gevent.Timeout(20):
        while chunk := sock.recv(1 << 16):
            data += chunk
    return data


@pytest.mark.parametrize("interrupt", ["kill", "flow_timeout", "write_timeout"])
def test_a_command_cut_mid_write_closes_the_connection(interrupt: str):
    app_end, switch_end = tcp_pair()
    write_timeout = 0.5 if interrupt == "write_timeout" else 30.0
    connection = Connection(app_end, lambda frame: None, name="cut", write_timeout=write_timeout)
    connection.start()

    def write_big() -> None:
        if interrupt == "flow_timeout":
            with gevent.Timeout(0.5):  # the flow's own bound around a verb
                connection.send(BIG)
        else:
            connection.send(BIG)

    writer = gevent.spawn(write_big)
    gevent.sleep(0.3)  # the switch reads nothing: the writer is blocked inside sendall by now
    assert not writer.dead
    if interrupt == "kill":
        writer.kill(block=True, timeout=5)  # as OutboundServer.stop() kills calls past the deadline
    else:
        writer.join(timeout=10)
        # the write timeout already closed the connection (CommandTimeout is an OSError): kept as a guard
        expected = gevent.Timeout if interrupt == "flow_timeout" else ConnectionClosed
        assert isinstance(writer.exception, expected)

    assert connection.closed
    with pytest.raises(ConnectionClosed):
        connection.send(commands.api("uuid_exists", "x"))
    # the switch gets part of the cut command, then EOF: no later command is spliced into its body
    received = read_all(switch_end)
    assert 0 < len(received) < len(BIG)
    assert BIG.startswith(received)
    assert switch.CommandReader().feed(received) == []
    switch_end.close()
