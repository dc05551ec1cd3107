"""The ``originate`` command line, built so that caller and campaign data stay data.

FreeSWITCH reads ``originate {a=1,b=2}DEST '&app(args)'`` in three passes, each undoing one level of
quoting (``switch_separate_string`` and ``cleanup_separated_string`` in switch_utils.c,
``switch_event_create_brackets`` in switch_event.c, ``originate_function`` in mod_commands.c):

1. the API arguments are split on spaces: ``'...'`` quotes, ``\\`` escapes ``'`` ``"`` ``\\`` and
   ``\\n \\r \\t \\s`` (``\\s`` is a space), quotes are removed;
2. the ``{...}`` block is cut at its matching ``}`` (no escape is honoured here), then split on ``,``
   with the same quoting rules, ``\\,`` being a literal comma;
3. each ``name=value`` is split at its first ``=``, and the value is unescaped and unquoted once more.

So every value is escaped three times over (``escape_value``), and what no escape can protect is
refused with ``UnsafeOriginateArgument``: ``{`` and ``}`` (they would end the block, and ``${...}``
would reach FreeSWITCH's variable expansion, which expands channel variables recursively), and
control characters (a CR or LF would end the ESL command). A destination holding ``,`` ``|`` or
``:_:`` would ring several legs, which an exactly-once originate must not do, so it is refused too.

``parse_originate`` mirrors those passes; tests use it to check that every value comes back intact.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import UnsafeArgumentError


class UnsafeOriginateArgument(UnsafeArgumentError):
    """A destination, variable or application argument that cannot be passed to originate safely."""


RESERVED_VARIABLES = frozenset({"origination_uuid", "originate_timeout", "origination_nested_vars"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,127}$")
_APP = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_+*#.@\-]{1,128}$")
_DEST_FORBIDDEN = re.compile(r"[\s'\"\\{}\[\]<>,|$^&()]|:_:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
ESCAPE = "\\"


def _escape_level(text: str, delim: str) -> str:
    """One level: ``cleanup_separated_string(result, delim)`` gives ``text`` back, and the splitter of
    that level finds no delimiter or quote in it. Spaces only split the first (blank) level, and the
    others only strip them at the edges, so a space becomes ``\\s`` only where it would be lost."""
    out = []
    last = len(text) - 1
    for index, char in enumerate(text):
        if char in (ESCAPE, "'") or (delim and char == delim):
            out.append(ESCAPE + char)
        elif char == " " and (not delim or index == 0 or index == last):
            out.append(ESCAPE + "s")
        else:
            out.append(char)
    return "".join(out)


def check_value(name: str, value: str) -> str:
    if _CONTROL.search(value):
        raise UnsafeOriginateArgument(f"originate variable {name}: control characters are not allowed: {value!r}")
    if "{" in value or "}" in value:
        raise UnsafeOriginateArgument(
            f"originate variable {name}: braces are not allowed (they end the variable block and reach "
            f"FreeSWITCH's ${{...}} expansion): {value!r}"
        )
    return value


def escape_value(name: str, value: str) -> str:
    """``value`` escaped for passes 3, 2 and 1 (innermost first)."""
    check_value(name, value)
    return _escape_level(_escape_level(_escape_level(value, "="), ","), "")


def check_variable_name(name: str) -> str:
    if not _NAME.match(name):
        raise UnsafeOriginateArgument(f"invalid originate variable name {name!r} (letters, digits, _ and -)")
    return name


def check_destination(destination: str) -> str:
    if not destination or _CONTROL.search(destination) or _DEST_FORBIDDEN.search(destination):
        raise UnsafeOriginateArgument(
            f"invalid originate destination {destination!r}: one endpoint (e.g. sofia/gateway/gw1/15551234567); "
            "spaces, quotes, backslashes, brackets, $, ^, &, parentheses and several legs (, | :_:) are refused"
        )
    return destination


@dataclass(frozen=True, slots=True)
class OriginateTarget:
    """Where the answered call goes: an application (``&socket(...)``, ``&park()``) or an extension."""

    app: str | None = None
    app_args: str = ""
    extension: str | None = None
    dialplan: str = "XML"
    context: str = "default"

    def render(self) -> str:
        if self.app is not None:
            if not _APP.match(self.app):
                raise UnsafeOriginateArgument(f"invalid application name {self.app!r}")
            bad = _CONTROL.search(self.app_args) or any(c in self.app_args for c in "'\\(){}")
            if bad:
                raise UnsafeOriginateArgument(
                    f"application argument {self.app_args!r}: quotes, backslashes, parentheses, braces and "
                    "control characters are refused"
                )
            return f"'&{self.app}({self.app_args})'"
        if self.extension is None:
            raise UnsafeOriginateArgument("originate needs an application or an extension")
        for what, token in (("extension", self.extension), ("dialplan", self.dialplan), ("context", self.context)):
            if not _TOKEN.match(token):
                raise UnsafeOriginateArgument(f"invalid {what} {token!r}")
        return f"{self.extension} {self.dialplan} {self.context}"


def socket_target(host: str, port: int, *, async_: bool = True, full: bool = True) -> OriginateTarget:
    """``&socket(HOST:PORT async full)``: the answered call connects to an esl-app server."""
    words = [f"{host}:{int(port)}"] + (["async"] if async_ else []) + (["full"] if full else [])
    return OriginateTarget(app="socket", app_args=" ".join(words))


def originate_command(
    destination: str,
    target: OriginateTarget,
    *,
    origination_uuid: str,
    timeout: int,
    variables: Mapping[str, object] | None = None,
) -> str:
    """``originate {origination_uuid=..,originate_timeout=..,...}DEST TARGET`` with every value escaped."""
    check_destination(destination)
    pairs = [("origination_uuid", origination_uuid), ("originate_timeout", str(int(timeout)))]
    for name, value in (variables or {}).items():
        check_variable_name(name)
        if name in RESERVED_VARIABLES:
            raise UnsafeOriginateArgument(f"originate variable {name} is set by esl-app and cannot be given")
        text = "" if value is None else str(value)
        if text:  # FreeSWITCH drops "name=" (and an empty value would unset the variable anyway)
            pairs.append((name, text))
    block = ",".join(f"{name}={escape_value(name, value)}" for name, value in pairs)
    return f"originate {{{block}}}{destination} {target.render()}"


# -- FreeSWITCH's side, mirrored (switch_utils.c, switch_event.c) ---------------------------------
_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", "s": " "}


def _cleanup(text: str, delim: str) -> str:
    """``cleanup_separated_string``: strip outer spaces, remove quotes, undo escapes."""
    i = 0
    while i < len(text) and text[i] == " ":
        i += 1
    out: list[str] = []
    end = None
    inside = False
    while i < len(text):
        char = text[i]
        if char == ESCAPE and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in ("'", '"', ESCAPE) or (delim and nxt == delim) or nxt in _UNESCAPE:
                out.append(_UNESCAPE.get(nxt, nxt))
                end = len(out)
                i += 2
                continue
        if char == "'" and (inside or "'" in text[i + 1 :]):
            inside = not inside
            if inside:
                end = len(out)
        else:
            out.append(char)
            if char != " " or inside:
                end = len(out)
        i += 1
    return "".join(out[:end]) if end is not None else "".join(out)


def split_separated(text: str, delim: str, limit: int = 1024) -> list[str]:
    """``switch_separate_string`` (``delim`` " " for the blank-delimited form), state for state."""
    if text.startswith("^^") and len(text) > 3:
        delim, text = text[2], text[3:]
    blank = delim == " "
    starts: list[int] = []
    ends: list[int] = []
    state, inside, i = "start", False, 0
    while i < len(text) and len(starts) < limit:
        char = text[i]
        if state == "start":
            starts.append(i)
            state = "skip_initial" if blank else "find"
            continue
        if state == "skip_initial":
            if char == " ":
                i += 1
            else:
                state = "find"
            continue
        if state == "skip_ending":
            if char == " ":
                i += 1
            else:
                state = "start"
            continue
        # find the delimiter
        if char == ESCAPE:
            i += 1
        elif char == "'" and (blank or inside or "'" in text[i + 1 :]):
            inside = not inside
        elif char == delim and not inside:
            ends.append(i)
            state = "skip_ending" if blank else "start"
        i += 1
    pieces = [text[s : ends[n]] if n < len(ends) else text[s:] for n, s in enumerate(starts)]
    return [_cleanup(piece, "" if blank else delim) for piece in pieces]


def _find_end_paren(text: str, start: int, open_: str, close: str) -> int:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == open_:
            depth += 1
        elif text[i] == close:
            depth -= 1
            if depth == 0:
                return i
    return -1


@dataclass(frozen=True, slots=True)
class ParsedOriginate:
    variables: dict[str, str]
    destination: str
    target: str  # the application ("&socket(...)") or the extension
    rest: list[str]  # dialplan, context, ... as given


def parse_originate(line: str) -> ParsedOriginate:
    """What FreeSWITCH makes of an ``originate`` argument line (or a whole ``originate ...`` command)."""
    if line.startswith("originate "):
        line = line[len("originate ") :]
    args = split_separated(line, " ", 10)
    if len(args) < 2:
        raise ValueError(f"originate needs a dial string and a target: {line!r}")
    dial = args[0]
    variables: dict[str, str] = {}
    while dial.startswith("{"):
        end = _find_end_paren(dial, 0, "{", "}")
        if end < 0:
            raise ValueError(f"unbalanced variable block in {dial!r}")
        for item in split_separated(dial[1:end], ","):
            pair = split_separated(item, "=", 2)
            if len(pair) == 2:
                variables[pair[0]] = pair[1]
        dial = dial[end + 1 :].lstrip(" ")
    return ParsedOriginate(variables, dial, args[1], args[2:])
