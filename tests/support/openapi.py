"""What the two OpenAPI conformance runs (agent, control plane) share: bounds and checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

F = TypeVar("F", bound=Callable[..., Any])


def bounded(max_examples: int) -> Callable[[F], F]:
    """Hypothesis settings for a schemathesis run on a shared machine: no deadline, no
    health checks for slow or much-filtered cases, `max_examples` per operation."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def call_and_validate(case: Any, **kwargs: Any) -> None:
    """Call the operation and run every check but positive_data_acceptance: a schema-valid
    request can still be refused with a documented 4xx for what no static schema can say."""
    case.call_and_validate(excluded_checks=[positive_data_acceptance], **kwargs)
