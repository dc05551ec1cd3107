"""The route table: which flow handles a call, compiled once at start.

Routes match the destination, the caller, the context and channel variables by exact value, prefix or
regular expression. Lookup never scans every route: exact destinations are a dict lookup, prefixes
are a dict lookup per distinct prefix length (longest first), and only then are destination regexes
tried, in declaration order. Within one bucket, routes with more conditions are tried first.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import RouteError

MatchKind = Literal["exact", "prefix", "regex"]
SocketMode = Literal["async", "static"]


@dataclass(frozen=True, slots=True)
class Matcher:
    kind: MatchKind
    value: str
    pattern: re.Pattern[str] | None = field(default=None, compare=False, hash=False)

    def test(self, text: str) -> re.Match[str] | bool:
        if self.kind == "exact":
            return text == self.value
        if self.kind == "prefix":
            return text.startswith(self.value)
        assert self.pattern is not None
        return self.pattern.fullmatch(text) or False

    def __str__(self) -> str:
        return {"exact": "{}", "prefix": "{}*", "regex": "/{}/"}[self.kind].format(self.value)


def exact(value: str) -> Matcher:
    return Matcher("exact", value)


def prefix(value: str) -> Matcher:
    if not value:
        raise RouteError("an empty prefix matches everything: leave the condition out instead")
    return Matcher("prefix", value)


def regex(pattern: str | re.Pattern[str]) -> Matcher:
    """A regular expression that must match the whole value; its groups reach the flow."""
    text = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
    try:
        compiled = re.compile(text)
    except re.error as exc:
        raise RouteError(f"invalid route regex {text!r}: {exc}") from None
    return Matcher("regex", text, compiled)


def as_matcher(value: str | Matcher | re.Pattern[str], what: str) -> Matcher:
    if isinstance(value, Matcher):
        return value
    if isinstance(value, re.Pattern):
        return regex(value)
    if isinstance(value, str):
        return exact(value)
    raise RouteError(f"{what} condition must be a string, prefix(), regex() or a compiled pattern, not {value!r}")


@dataclass(slots=True)
class Route:
    flow: Callable[..., Any]
    destination: Matcher | None = None
    caller: Matcher | None = None
    context: Matcher | None = None
    variables: dict[str, Matcher] = field(default_factory=dict)
    name: str = ""
    order: int = 0
    accepts: frozenset[str] | None = None  # keyword names the flow takes (None: **kwargs)
    pools: frozenset[str] | None = None  # the worker pools whose calls may run it (None: every pool)
    # the socket mode the flow needs: "async" for interactive flows (menus, queues): a call that arrives
    # on a static socket is handed off to an async one first; None: either mode will do
    mode: SocketMode | None = None

    @property
    def conditions(self) -> int:
        # a route declared for a pool is more specific than one shared by every pool
        return sum(m is not None for m in (self.caller, self.context)) + len(self.variables) + (self.pools is not None)

    def signature(self) -> tuple[Any, ...]:
        pools = tuple(sorted(self.pools)) if self.pools is not None else None
        return (self.destination, self.caller, self.context, tuple(sorted(self.variables.items())), pools)

    def runs_in(self, pool: str | None) -> bool:
        return pool is None or self.pools is None or pool in self.pools

    def describe(self) -> str:
        parts = [f"destination={self.destination}" if self.destination else "destination=<any>"]
        if self.caller:
            parts.append(f"caller={self.caller}")
        if self.context:
            parts.append(f"context={self.context}")
        parts += [f"{name}={matcher}" for name, matcher in self.variables.items()]
        if self.pools is not None:
            parts.append(f"pool={','.join(sorted(self.pools))}")
        if self.mode is not None:
            parts.append(f"mode={self.mode}")
        return " ".join(parts)


@dataclass(slots=True)
class RouteMatch:
    route: Route
    groups: tuple[str | None, ...] = ()
    named: dict[str, str | None] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        accepts = self.route.accepts
        if accepts is None:
            return dict(self.named)
        return {k: v for k, v in self.named.items() if k in accepts}


VariableLookup = Callable[[str], str | None]


class RouteTable:
    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes
        self._exact: dict[str, list[Route]] = {}
        self._prefix: dict[int, dict[str, list[Route]]] = {}
        self._regex: list[Route] = []
        self._any: list[Route] = []
        seen: dict[tuple[Any, ...], Route] = {}
        for route in routes:
            key = route.signature()
            if key in seen:
                raise RouteError(
                    f"routes {seen[key].name!r} and {route.name!r} have the same conditions "
                    f"({route.describe()}): the second could never run"
                )
            seen[key] = route
            route.accepts = _accepted_keywords(route.flow)
            dest = route.destination
            if dest is None:
                self._any.append(route)
            elif dest.kind == "exact":
                self._exact.setdefault(dest.value, []).append(route)
            elif dest.kind == "prefix":
                self._prefix.setdefault(len(dest.value), {}).setdefault(dest.value, []).append(route)
            else:
                self._regex.append(route)
            self._check_groups(route)
        for bucket in (*self._exact.values(), *(b for d in self._prefix.values() for b in d.values())):
            bucket.sort(key=lambda r: (-r.conditions, r.order))
        self._any.sort(key=lambda r: (-r.conditions, r.order))
        self._prefix_lengths = sorted(self._prefix, reverse=True)

    @staticmethod
    def _check_groups(route: Route) -> None:
        names: set[str] = set()
        for matcher in (route.destination, route.caller, route.context, *route.variables.values()):
            if matcher is not None and matcher.pattern is not None:
                names |= set(matcher.pattern.groupindex)
        if route.accepts is not None:
            flow_params = _required_keywords(route.flow)
            missing = flow_params - names
            if missing:
                raise RouteError(
                    f"flow {route.name!r} requires {sorted(missing)} but its route captures only {sorted(names)}"
                )

    def match(
        self, destination: str, caller: str = "", context: str = "", variable: VariableLookup | None = None
    ) -> RouteMatch | None:
        lookup = variable or (lambda _name: None)
        candidates = self._exact.get(destination)
        if candidates:
            found = _first(candidates, destination, caller, context, lookup)
            if found:
                return found
        for length in self._prefix_lengths:
            if length > len(destination):
                continue
            candidates = self._prefix[length].get(destination[:length])
            if candidates:
                found = _first(candidates, destination, caller, context, lookup)
                if found:
                    return found
        for route in self._regex:
            found = _try(route, destination, caller, context, lookup)
            if found:
                return found
        return _first(self._any, destination, caller, context, lookup)

    def describe(self) -> list[str]:
        """The table in lookup order, one line per route."""
        lines: list[str] = []
        for value in sorted(self._exact):
            lines += [f"exact   {r.describe():<60} -> {r.name}" for r in self._exact[value]]
        for length in self._prefix_lengths:
            for value in sorted(self._prefix[length]):
                lines += [f"prefix  {r.describe():<60} -> {r.name}" for r in self._prefix[length][value]]
        lines += [f"regex   {r.describe():<60} -> {r.name}" for r in self._regex]
        lines += [f"any     {r.describe():<60} -> {r.name}" for r in self._any]
        return lines


def _first(
    routes: list[Route], destination: str, caller: str, context: str, lookup: VariableLookup
) -> RouteMatch | None:
    for route in routes:
        found = _try(route, destination, caller, context, lookup)
        if found:
            return found
    return None


def _try(route: Route, destination: str, caller: str, context: str, lookup: VariableLookup) -> RouteMatch | None:
    named: dict[str, str | None] = {}
    groups: tuple[str | None, ...] = ()
    for matcher, value in ((route.destination, destination), (route.caller, caller), (route.context, context)):
        if matcher is None:
            continue
        result = matcher.test(value)
        if not result:
            return None
        if isinstance(result, re.Match):
            named.update(result.groupdict())
            if matcher is route.destination:
                groups = result.groups()
    for name, matcher in route.variables.items():
        value = lookup(name)
        if value is None:
            return None
        result = matcher.test(value)
        if not result:
            return None
        if isinstance(result, re.Match):
            named.update(result.groupdict())
    return RouteMatch(route, groups, named)


def _accepted_keywords(flow: Callable[..., Any]) -> frozenset[str] | None:
    params = list(inspect.signature(flow).parameters.values())[1:]  # the first one is the call
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def _required_keywords(flow: Callable[..., Any]) -> set[str]:
    params = list(inspect.signature(flow).parameters.values())[1:]
    return {
        p.name
        for p in params
        if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def build_route(
    flow: Callable[..., Any],
    *,
    destination: str | Matcher | re.Pattern[str] | None,
    caller: str | Matcher | re.Pattern[str] | None,
    context: str | Matcher | re.Pattern[str] | None,
    variables: Mapping[str, str | Matcher | re.Pattern[str]] | None,
    name: str | None,
    order: int,
    pool: str | Iterable[str] | None = None,
    mode: SocketMode | None = None,
) -> Route:
    if not callable(flow):
        raise RouteError(f"route target {flow!r} is not callable")
    if mode not in (None, "async", "static"):
        raise RouteError(f"route mode must be 'async', 'static' or None, not {mode!r}")
    return Route(
        flow=flow,
        destination=as_matcher(destination, "destination") if destination is not None else None,
        caller=as_matcher(caller, "caller") if caller is not None else None,
        context=as_matcher(context, "context") if context is not None else None,
        variables={k: as_matcher(v, f"variable {k}") for k, v in (variables or {}).items()},
        name=name or getattr(flow, "__qualname__", repr(flow)),
        order=order,
        pools=_pools(pool),
        mode=mode,
    )


def _pools(pool: str | Iterable[str] | None) -> frozenset[str] | None:
    if pool is None:
        return None
    names = frozenset([pool] if isinstance(pool, str) else pool)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise RouteError(f"pool must be a pool name or a list of names, not {pool!r}")
    return names
