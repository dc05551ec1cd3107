"""What a check found: a severity, the value seen, why it matters and the fix."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class Severity(StrEnum):
    OK = "ok"
    WARNING = "warning"  # works, but costs capacity, detection time or safety margin
    CRITICAL = "critical"  # calls will fail, or the node is open to anyone: the command exits non-zero


class Finding(BaseModel):
    scope: str = Field(description='"host" or "node NAME"')
    check: str
    severity: Severity
    value: str = ""
    why: str = ""
    fix: str = ""


class Report(BaseModel):
    findings: list[Finding] = Field(default_factory=list)

    def count(self, severity: Severity) -> int:
        return sum(1 for finding in self.findings if finding.severity is severity)

    def exit_code(self, strict: bool = False) -> int:
        """1 when something is critical (or, with ``strict``, when anything is not ok)."""
        if self.count(Severity.CRITICAL) or (strict and self.count(Severity.WARNING)):
            return 1
        return 0

    def format_text(self) -> str:
        lines: list[str] = []
        scopes = list(dict.fromkeys(finding.scope for finding in self.findings))
        width = max((len(finding.check) for finding in self.findings), default=10)
        for scope in scopes:
            if lines:
                lines.append("")
            lines.append(scope)
            for finding in (f for f in self.findings if f.scope == scope):
                label = finding.severity.value.upper() if finding.severity is not Severity.OK else "ok"
                lines.append(f"  {label:<9} {finding.check:<{width}}  {finding.value}".rstrip())
                if finding.severity is not Severity.OK:
                    if finding.why:
                        lines.append(f"  {'':<9} why: {finding.why}")
                    if finding.fix:
                        lines.append(f"  {'':<9} fix: {finding.fix}")
        critical, warnings = self.count(Severity.CRITICAL), self.count(Severity.WARNING)
        lines.append("")
        lines.append(f"{critical} critical, {warnings} warning{'' if warnings == 1 else 's'}")
        return "\n".join(lines)
