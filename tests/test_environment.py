"""The test run's own environment: no product setting from the shell leaks into a test."""

from __future__ import annotations

import os


def test_no_edgefleet_setting_from_the_shell_reaches_a_test() -> None:
    leaked = [n for n in os.environ if n.startswith(("EDGEFLEET_CP_", "EDGEFLEET_AGENT_"))]
    assert leaked == []
