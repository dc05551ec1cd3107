"""What FreeSWITCH does to argument text, and how esl-app writes data so that it survives as data.

FreeSWITCH expands ``${name}`` (a channel variable) and ``${func(args)}`` / ``${func args}`` (the API
command ``func``: ``${system(id)}`` runs a shell command) in every application argument before the
application runs (``switch_core_session_exec`` -> ``switch_channel_expand_variables``). API expansion
is on unless switch.conf says ``api-expansion=false``. Some applications expand their data again.
So text that came from a caller must never reach an application argument as is.

The rules below are read from FreeSWITCH 1.10 source (src/switch_channel.c
``switch_channel_expand_variables_check``, src/include/switch_utils.h, src/switch_utils.c
``switch_separate_string``, mod_dptools.c, mod_commands.c). Written out in docs/expansion.md.

Expansion pass (``expand`` below is a line-by-line port, used by the fake FreeSWITCH):

* The text is left untouched unless it contains ``$`` + optional backslashes + ``{``, or a backslash
  followed by one of ``\\ ' n s t`` (``switch_string_var_check_const``, ``switch_string_has_escaped_data``).
  So a lone ``\\$x`` stays ``\\$x``: escaping is only undone when something else triggers the pass.
* ``\\$`` gives ``$`` (and ``\\$$`` gives one ``$``), ``\\\\`` gives ``\\``, ``\\'`` gives *nothing*,
  any other backslash stays.
* ``${...}`` ends at its matching ``}``; a space or ``(`` in it makes it an API call. A variable's value
  is expanded again when substituted (recursively), and the character right after the closing ``}``
  is copied without escape processing.

Passes per application: 2 for ``set``, ``push``, ``unshift``, ``multiset`` (``base_set`` expands the
value once more); 1 for everything else esl-app uses (``export`` stores its value as is; bridge's
``{var=value}``, ``playback``, ``say``, ``speak``, ``respond``, ``transfer`` add no pass of their own;
``playback phrase:`` macros do, and esl-app refuses data there). ``api`` commands are not expanded:
``uuid_setvar`` stores its value as given (after ``switch_separate_string``'s own unescaping), while
``uuid_setvar_multi`` silently drops a value that contains ``${`` (it sets with ``var_check``).

How data is written (``escape``): ``$`` becomes ``$\\'`` (the ``\\'`` both forces the pass and
vanishes in it, and it works after a ``}`` where ``\\$`` would not), a backslash that precedes
``$ \\ '`` or ends the data is doubled. Done once per pass the application makes.

``Expand`` is the one opt-in: text a flow wrote itself whose ``${...}`` must expand
(``call.bridge(Expand("user/${target_ext}"))``). Adding a plain ``str`` to it adds data, escaped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from .errors import UnsafeCommandError

# applications whose data FreeSWITCH expands a second time (mod_dptools base_set)
TWO_PASS_APPLICATIONS = frozenset({"set", "push", "unshift", "multiset"})

GetVariable = Callable[[str], "str | None"]
RunApi = Callable[[str, str], "str | None"]


def passes_for(app: str) -> int:
    """How many times FreeSWITCH expands ``app``'s argument."""
    return 2 if app.lower() in TWO_PASS_APPLICATIONS else 1


# -- FreeSWITCH's side ---------------------------------------------------------------------------


def var_check(text: str) -> bool:
    """``switch_string_var_check_const``: ``$`` then optional backslashes then ``{``."""
    dollar = False
    for char in text:
        if char == "$":
            dollar = True
        elif dollar:
            if char == "{":
                return True
            if char != "\\":
                dollar = False
    return False


def has_escaped_data(text: str) -> bool:
    """``switch_string_has_escaped_data``: a backslash followed by ``\\ n s t '``."""
    index = text.find("\\")
    while index != -1:
        if index + 1 < len(text) and text[index + 1] in "\\nst'":
            return True
        index = text.find("\\", index + 1)
    return False


def needs_expansion(text: str) -> bool:
    """Whether ``switch_channel_expand_variables`` processes ``text`` at all."""
    return var_check(text) or has_escaped_data(text)


def expand(
    text: str,
    get_variable: GetVariable,
    run_api: RunApi | None = None,
    *,
    recursion: int = 0,
) -> str:
    """Port of ``switch_channel_expand_variables_check``. ``run_api(name, args)`` is called for every
    ``${name(args)}``/``${name args}`` (None: API expansion off, FreeSWITCH then inserts
    ``<API Execute Permission Denied>``)."""
    if recursion > 100 or not text or not needs_expansion(text):
        return text

    def again(value: str) -> str:
        return expand(value, get_variable, run_api, recursion=recursion + 1)

    out: list[str] = []
    n = len(text)
    i = 0
    while i < n:
        literal = False
        vtype = 0
        if text[i] == "\\" and i + 1 < n:
            after = text[i + 1]
            if after == "$":
                literal = True
                i += 1
                if i + 1 < n and text[i + 1] == "$":
                    i += 1
            elif after == "'":
                i += 2  # "\'" vanishes
                continue
            elif after == "\\":
                out.append("\\")
                i += 2
                continue
        if text[i] == "$" and not literal:
            if i + 1 < n and text[i + 1] == "$":
                i += 1
                is_global = True
            else:
                is_global = False
            if i + 1 < n and text[i + 1] == "{":
                vtype = 3 if is_global else 1
            else:
                literal = True
        if literal:
            out.append(text[i])
            i += 1
            continue
        if not vtype:
            out.append(text[i])
            i += 1
            continue
        # ${...}: find the matching brace
        start = i + 2
        depth = 1
        end = start
        name_end = n
        while end < n:
            char = text[end]
            if depth == 1 and char == "}":
                depth = 0
                name_end = end
                end += 1
                break
            if depth > 0:
                if end != start and char == "{":
                    depth += 1
                elif depth > 1 and char == "}":
                    depth -= 1
            end += 1
        vname = text[start:name_end]
        i = min(end, n)
        args: str | None = None
        for k, char in enumerate(vname):
            if char == " " or char == "(":
                if char == "(":
                    depth = 1
                args, vname = vname[k + 1 :], vname[:k].rstrip(" ")
                break
        if args is not None:
            for k, char in enumerate(args):
                if char == "(":
                    depth += 1
                elif depth > 1 and char == ")":
                    depth -= 1
                elif depth == 1 and char == ")":
                    args = args[:k]
                    break
            name, argument = again(vname), again(args)
            if run_api is None:
                value: str | None = "<API Execute Permission Denied>"
            else:
                value = run_api(name, argument)
        else:
            value = _variable(again(vname), get_variable, again)
        if value:
            out.append(value)
        # the character after the closing brace is copied as is (a '$' is looked at again)
        if i < n and text[i] != "$":
            out.append(text[i])
            i += 1
    return "".join(out)


def _variable(name: str, get_variable: GetVariable, again: Callable[[str], str]) -> str | None:
    offset = length = 0
    index = -1
    if ":" in name:
        name, _, rest = name.partition(":")
        offset_text, _, length_text = rest.partition(":")
        offset, length = _atoi(offset_text), _atoi(length_text)
    if "[" in name and "]" in name[name.index("[") :]:
        name, _, rest = name.partition("[")
        index = _atoi(rest)
    value = get_variable(name) if index < 0 else None  # arrays are not modelled
    if value is None:
        return None
    value = again(value)  # a variable's value is expanded in turn
    if offset >= 0:
        value = "" if offset > len(value) else value[offset:]
    elif -offset <= len(value):
        value = value[len(value) + offset :]
    if 0 < length < len(value):
        value = value[:length]
    return value


def _atoi(text: str) -> int:
    digits = ""
    for k, char in enumerate(text.lstrip()):
        if char.isdigit() or (k == 0 and char in "+-"):
            digits += char
        else:
            break
    try:
        return int(digits)
    except ValueError:
        return 0


def separate_string(text: str, delim: str = " ", limit: int = 1024) -> list[str]:
    """Port of ``switch_separate_string``: split at ``delim`` outside single quotes, at most ``limit``
    pieces (the last keeps the rest), then strip quotes, unescape and trim each piece."""
    if text.startswith("^^") and len(text) > 3:
        delim, text = text[2], text[3:]
    starts: list[int] = []
    cuts: set[int] = set()  # where FreeSWITCH writes a NUL over a delimiter
    n = len(text)
    i = 0
    quoted = False
    if delim == " ":
        state = "start"
        while i < n and len(starts) < limit:
            char = text[i]
            if state == "start":
                starts.append(i)
                state = "skip_initial"
            elif state == "skip_initial":
                if char == " ":
                    i += 1
                else:
                    state = "find"
            elif state == "find":
                if char == "\\":
                    i += 1
                elif char == "'":
                    quoted = not quoted
                elif char == " " and not quoted:
                    cuts.add(i)
                    state = "skip_ending"
                i += 1
            elif char == " ":
                i += 1
            else:
                state = "start"
    else:
        state = "start"
        while i < n and len(starts) < limit:
            char = text[i]
            if state == "start":
                starts.append(i)
                state = "find"
                continue
            if char == "\\":
                i += 1
            elif char == "'" and (quoted or "'" in text[i + 1 :]):
                quoted = not quoted
            elif char == delim and not quoted:
                cuts.add(i)
                state = "start"
            i += 1
    pieces = []
    for start in starts:
        stop = start
        while stop < n and stop not in cuts:
            stop += 1
        pieces.append(_cleanup(text[start:stop], "" if delim == " " else delim))
    return pieces


_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", "s": " "}


def _cleanup(piece: str, delim: str) -> str:
    """``cleanup_separated_string``: quotes removed, escapes resolved, blanks trimmed."""
    piece = piece.lstrip(" ")
    out: list[str] = []
    end = 0
    quoted = False
    i = 0
    while i < len(piece):
        char = piece[i]
        if char == "\\" and i + 1 < len(piece):
            after = piece[i + 1]
            if after in "'\"\\" or (delim and after == delim) or after in _UNESCAPE:
                out.append(_UNESCAPE.get(after, after))
                end = len(out)
                i += 2
                continue
        if char == "'" and (quoted or "'" in piece[i + 1 :]):
            quoted = not quoted
            if quoted:
                end = len(out)
        else:
            out.append(char)
            if char != " " or quoted:
                end = len(out)
        i += 1
    return "".join(out[:end])


# -- esl-app's side: writing data ----------------------------------------------------------------


def escape(text: str, passes: int = 1) -> str:
    """``text`` written so that ``passes`` expansion passes give back exactly ``text``."""
    for _ in range(passes):
        text = _escape_once(text)
    return text


# a backslash that the expander would read as an escape: before $ \ ' or at the very end
_ESCAPING_BACKSLASH = re.compile(r"\\(?=[$\\']|\Z)")


def _escape_once(text: str) -> str:
    if "$" not in text and "\\" not in text:
        return text
    return _ESCAPING_BACKSLASH.sub(r"\\\\", text).replace("$", "$\\'")


def quote_token(text: str) -> str:
    """One space-separated argument that ``switch_separate_string`` gives back as ``text``
    (before the expansion layer: pass the result through ``escape``)."""
    out: list[str] = []
    last = len(text) - 1
    for k, char in enumerate(text):
        if char == "'":
            out.append("\\'")
        elif char == "\\" and (k == last or text[k + 1] in "'\"\\nrts"):
            out.append("\\\\")
        else:
            out.append(char)
    body = "".join(out)
    return f"'{body}'" if (not text or " " in text) else body


def setvar_value(text: str) -> str:
    """A value for ``api uuid_setvar <uuid> <name> <value>``: its ``switch_separate_string`` gives
    back exactly ``text`` (spaces, quotes, backslashes and newlines included); no expansion happens."""
    table = {"\\": "\\\\", "'": "\\'", '"': '\\"', " ": "\\s", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    body = "".join(table.get(char, char) for char in text)
    # switch_api_execute strips trailing blanks (vertical tab included) off the whole argument
    return f"'{body}'" if body.endswith("\x0b") else body


class Expand:
    """The explicit opt-in to FreeSWITCH expansion: ``Expand("user/${target}")``.

    Only for text the flow wrote itself. ``Expand(...) + caller_text`` appends ``caller_text`` as
    data (escaped); ``Expand(...) + Expand(...)`` joins two opt-ins. A variable referenced this way is
    expanded in turn by FreeSWITCH, so ``${...}`` must not name a variable that holds caller data.
    """

    __slots__ = ("segments",)

    def __init__(self, text: str = "", *, _segments: tuple[tuple[str, bool], ...] | None = None) -> None:
        if _segments is None:
            if not isinstance(text, str):
                raise TypeError(f"Expand takes text, not {type(text).__name__}")
            _segments = ((text, True),) if text else ()
        self.segments = _segments

    @classmethod
    def data(cls, text: str) -> Expand:
        """Text that must arrive as is (escaped when rendered)."""
        return cls(_segments=((text, False),) if text else ())

    def __add__(self, other: object) -> Expand:
        if isinstance(other, Expand):
            return Expand(_segments=_merge(self.segments + other.segments))
        if isinstance(other, str):
            return Expand(_segments=_merge((*self.segments, (other, False))))
        return NotImplemented

    def __radd__(self, other: object) -> Expand:
        if isinstance(other, str):
            return Expand(_segments=_merge(((other, False), *self.segments)))
        return NotImplemented

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expand) and other.segments == self.segments

    def __hash__(self) -> int:
        return hash(self.segments)

    def __str__(self) -> str:
        return "".join(text for text, _ in self.segments)

    def __repr__(self) -> str:
        return f"Expand({str(self)!r})" if all(raw for _, raw in self.segments) else f"Expand({self.segments!r})"

    @property
    def expands(self) -> bool:
        return any(raw for _, raw in self.segments)


def _merge(segments: Iterable[tuple[str, bool]]) -> tuple[tuple[str, bool], ...]:
    merged: list[tuple[str, bool]] = []
    for text, raw in segments:
        if not text:
            continue
        if merged and merged[-1][1] == raw:
            merged[-1] = (merged[-1][0] + text, raw)
        else:
            merged.append((text, raw))
    return tuple(merged)


def render(arg: str | Expand, passes: int = 1) -> str:
    """The argument as it goes on the wire: data escaped for ``passes`` passes, opt-ins as written.

    Refused with ``UnsafeCommandError``: data that would start the expanded argument with ``%[``
    (FreeSWITCH then reads scoped variables from it), and data placed where the expander would merge
    it with the opt-in text around it (after a ``$`` or a backslash, or a doubled backslash right
    after a ``}``).
    """
    if isinstance(arg, str):  # the common case: all data
        if arg[:1] == "%" and _scoped_prefix(arg):
            raise UnsafeCommandError(f"an argument cannot start with {arg[:3]!r}: FreeSWITCH reads %[...] as variables")
        return escape(arg, passes)
    segments = arg.segments
    out: list[str] = []
    previous_raw = ""
    for position, (text, raw) in enumerate(segments):
        if raw:
            out.append(text)
            previous_raw = text
            continue
        if position == 0 and _scoped_prefix(text):
            raise UnsafeCommandError(
                f"an argument cannot start with {text[:3]!r}: FreeSWITCH reads %[...] as variables"
            )
        written = escape(text, passes)
        if previous_raw and (
            previous_raw[-1] in "$\\" or (previous_raw[-1] == "}" and written.startswith("\\\\"))
        ):
            raise UnsafeCommandError(
                f"data {text!r} cannot follow {previous_raw[-8:]!r} in an expanded argument: separate them"
            )
        out.append(written)
        previous_raw = ""
    return "".join(out)


def _scoped_prefix(text: str) -> bool:
    return text.startswith("%") and "[" in text[1:3]


__all__ = [
    "TWO_PASS_APPLICATIONS",
    "Expand",
    "escape",
    "expand",
    "needs_expansion",
    "passes_for",
    "quote_token",
    "render",
    "separate_string",
    "setvar_value",
]
