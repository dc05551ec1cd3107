"""The call flow and unit test shown in README.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_flow_and_its_tests_pass(esl_call_any):
    """The same flow and tests, over the Event Socket and inside FreeSWITCH (mod_python3)."""
    esl_call = esl_call_any
    flow, tests = python_blocks()[:2]
    namespace: dict = {}
    exec(compile(flow, "README.md (flow)", "exec"), namespace)
    exec(compile(tests, "README.md (tests)", "exec"), namespace)
    names = [name for name in namespace if name.startswith("test_")]
    assert names, "README's test block defines no test"
    for name in names:
        namespace[name](esl_call)
