"""Known unsoundness: each entry is assigned (issue 12, or FINDINGS.md for the lead to
assign) and being fixed by another developer.

A name here is a mutation kind (mutations.py) or a project (``Project.known_project``) that
exposes the bug. While it is listed, the random runs leave it out, and its probe
(``test_soundness.py::test_probe``) must *fail*: a strict expected failure. The day the fix
lands on main the probe passes, the test fails with "no longer fails: remove the mark", and
deleting the line here puts the kind back into the random runs.
"""

from __future__ import annotations

KNOWN: dict[str, str] = {}
