"""Serialization of the commands a client writes to FreeSWITCH.

Every command is one header block ended by a blank line. FreeSWITCH reads it byte by byte, splits
lines at LF, and never decodes what it reads (spec 1.3), so a CR or LF inside a value would start a
new header or a new command. Nothing here lets that happen: values are checked, and an application
argument that needs a newline (or leading spaces, or is very long) travels as a
``content-type: text/plain`` body, which FreeSWITCH stores byte for byte (spec 3.2).

``execute`` arguments are also escaped against FreeSWITCH's variable expansion (``expansion``); the
``sendmsg`` underneath it writes what it is given.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import expansion
from .errors import UnsafeCommandError
from .expansion import Expand

_FORBIDDEN = ("\n", "\r", "\0")
# above this an argument goes in the body: FreeSWITCH's header parsing has no limit, but bodies are
# the documented path for long arguments and avoid any line-length surprises on the way.
MAX_HEADER_ARG = 4096


def check_safe(what: str, text: str) -> str:
    """Return ``text`` if it cannot break framing; raise ``UnsafeCommandError`` naming ``what``."""
    for char in _FORBIDDEN:
        if char in text:
            raise UnsafeCommandError(f"{what} contains {char!r}, which would break ESL framing: {text!r}")
    return text


def encode_command(line: str, headers: Iterable[tuple[str, str]] = (), body: bytes | None = None) -> bytes:
    """Serialize a command line, optional headers and an optional body (adds Content-Length).

    Refused with ``UnsafeCommandError``: CR, LF or NUL anywhere in the line or a header; an empty
    line (FreeSWITCH skips the blank lines and would take the next command's bytes for this one);
    a caller-supplied ``Content-Length`` header (FreeSWITCH would read that many bytes of whatever
    follows as a body, swallowing the next command).
    """
    if not check_safe("command", line):
        raise UnsafeCommandError("empty command line")
    parts = [line, "\n"]
    for name, value in headers:
        check_safe("header name", name)
        if ":" in name or not name:
            raise UnsafeCommandError(f"invalid header name {name!r}")
        if name.lower() == "content-length":
            raise UnsafeCommandError("Content-Length is added from the body; it cannot be given as a header")
        parts.append(f"{name}: {check_safe(f'header {name}', value)}\n")
    if body is not None:
        if b"\0" in body:
            raise UnsafeCommandError("command body contains a NUL byte, which FreeSWITCH would truncate at")
        parts.append(f"Content-Length: {len(body)}\n\n")
        return _encode("command", "".join(parts)) + body
    parts.append("\n")
    return _encode("command", "".join(parts))


def _encode(what: str, text: str) -> bytes:
    """UTF-8; undecodable input bytes (``surrogateescape``) go back out as they came in."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:  # a lone surrogate that no byte decodes to
        raise UnsafeCommandError(f"{what} is not encodable text: {exc}") from exc


def _bool(value: bool) -> str:
    return "true" if value else "false"


def sendmsg(
    call_command: str,
    *,
    uuid: str | None = None,
    app: str | None = None,
    arg: str | None = None,
    event_uuid: str | None = None,
    event_lock: bool = False,
    loops: int | None = None,
    async_: bool | None = None,
    extra: Iterable[tuple[str, str]] = (),
) -> bytes:
    """A ``sendmsg`` for ``call-command: execute`` / ``hangup`` / ``unicast`` / ``xferext`` ...

    ``event_uuid`` comes back as ``Application-UUID`` on CHANNEL_EXECUTE(_COMPLETE), which is how a
    waiter finds the completion of exactly this command.
    """
    line = f"sendmsg {uuid}" if uuid else "sendmsg"
    headers: list[tuple[str, str]] = [("call-command", call_command)]
    body: bytes | None = None
    if app is not None:
        if not app or any(c.isspace() for c in app):
            raise UnsafeCommandError(f"invalid application name {app!r}")
        headers.append(("execute-app-name", app))
    if arg is not None and arg != "":
        if "\0" in arg:
            raise UnsafeCommandError(f"application argument contains a NUL byte: {arg!r}")
        if "\n" in arg or "\r" in arg or arg[0].isspace() or len(arg) > MAX_HEADER_ARG:
            headers.append(("content-type", "text/plain"))
            body = _encode("application argument", arg)
        else:
            headers.append(("execute-app-arg", arg))
    if loops is not None:
        headers.append(("loops", str(int(loops))))
    if event_lock:
        headers.append(("event-lock", "true"))
    if async_ is not None:
        headers.append(("async", _bool(async_)))
    if event_uuid:
        headers.append(("Event-UUID", event_uuid))
    headers.extend(extra)
    return encode_command(line, headers, body)


def execute(
    app: str,
    arg: str | Expand | None = None,
    *,
    uuid: str | None = None,
    event_uuid: str | None = None,
    event_lock: bool = True,
    loops: int | None = None,
) -> bytes:
    """``sendmsg`` / ``call-command: execute``. ``arg`` is data: FreeSWITCH expands ``${...}`` in every
    application argument (``${system(...)}`` runs a command), so a ``str`` is escaped for exactly the
    expansion passes ``app`` makes (``expansion.passes_for``: 2 for ``set``) and arrives as written.
    Only an ``Expand`` lets its own ``${...}`` expand (see ``esl_app.protocol.expansion``)."""
    text = None if arg is None else expansion.render(arg, expansion.passes_for(app))
    return sendmsg(
        "execute", uuid=uuid, app=app, arg=text, event_uuid=event_uuid, event_lock=event_lock, loops=loops
    )


def hangup(cause: str = "NORMAL_CLEARING", *, uuid: str | None = None) -> bytes:
    return sendmsg("hangup", uuid=uuid, extra=[("hangup-cause", check_safe("hangup cause", cause))])


def _api_line(word: str, command: str, args: tuple[str, ...]) -> str:
    # checked before trimming: a trailing newline must be refused, not silently dropped
    line = check_safe(f"{word} command", " ".join((word, command, *args)))
    return line.rstrip(" ")


def api(command: str, *args: str) -> bytes:
    """``api cmd args``: the whole line is the command, so CR/LF in any argument is refused."""
    return encode_command(_api_line("api", command, args))


def bgapi(command: str, *args: str, job_uuid: str | None = None) -> bytes:
    headers = [("Job-UUID", job_uuid)] if job_uuid else []
    return encode_command(_api_line("bgapi", command, args), headers)


# Plain commands (their argument, when any, is part of the command line).
CONNECT = b"connect\n\n"
MYEVENTS = b"myevents\n\n"
EXIT = b"exit\n\n"
NOLINGER = b"nolinger\n\n"
RESUME = b"resume\n\n"
# A bare LF is discarded by FreeSWITCH without a reply and wakes its 20 ms event poll (spec 9).
WAKE = b"\n"


def myevents(fmt: str = "plain") -> bytes:
    return MYEVENTS if fmt == "plain" else encode_command(f"myevents {fmt}")


def linger(seconds: int | None = None) -> bytes:
    return encode_command("linger" if seconds is None else f"linger {int(seconds)}")


def event(*names: str, fmt: str = "plain") -> bytes:
    return encode_command(" ".join(("event", fmt, *names)))


def nixevent(*names: str) -> bytes:
    return encode_command(" ".join(("nixevent", *names)))


# The fixed subscription of ``myevents`` (spec 2.5; mod_event_socket.c sets these event_list entries,
# so ``nixevent`` can take any of them back).
MYEVENTS_SUBSCRIPTION = frozenset(
    {
        "CHANNEL_ANSWER", "CHANNEL_APPLICATION", "CHANNEL_BRIDGE", "CHANNEL_CREATE", "CHANNEL_DATA",
        "CHANNEL_DESTROY", "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_HANGUP",
        "CHANNEL_HANGUP_COMPLETE", "CHANNEL_ORIGINATE", "CHANNEL_UUID", "CHANNEL_OUTGOING", "CHANNEL_PARK",
        "CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA", "CHANNEL_STATE", "CHANNEL_UNBRIDGE", "CHANNEL_UNPARK",
        "DETECTED_SPEECH", "DTMF", "NOTALK", "TALK",
    }
)  # fmt: skip


def filter_(header: str, value: str) -> bytes:
    return encode_command(f"filter {header} {value}")
