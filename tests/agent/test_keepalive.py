"""keep_alive parsing and the idle-unload timer at the extremes."""

from __future__ import annotations

import math
import threading

import pytest

from agent.keepalive import FOREVER, KEEP_ALIVE_MAX_S, ExpiryTimer, parse_keep_alive


@pytest.mark.parametrize("value", [1e308, "1e308", math.inf, "inf", "99999999999h", -1e308])
def test_huge_and_negative_keep_alive_mean_forever(value: str | float) -> None:
    assert parse_keep_alive(value) == FOREVER


def test_nan_keep_alive_is_refused() -> None:
    for value in (math.nan, "nan", "NaN"):
        with pytest.raises(ValueError, match="keep_alive"):
            parse_keep_alive(value)


def test_a_timer_armed_too_far_out_keeps_running_and_can_be_replaced() -> None:
    fired = threading.Event()
    timer = ExpiryTimer()
    timer.arm(1e308, fired.set)  # threading.Timer(1e308) would die of OverflowError
    assert timer.expires_at is not None and math.isfinite(timer.expires_at)
    assert timer._timer is not None and timer._timer.is_alive()
    timer.arm(0.01, fired.set)
    assert fired.wait(5)
    timer.cancel()
    assert KEEP_ALIVE_MAX_S < threading.TIMEOUT_MAX
