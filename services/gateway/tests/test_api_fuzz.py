"""The OpenAPI document fuzzed against the running gateway with an operator token:
valid and invalid input on every operation, no 5xx, every answer as documented.

Each operation is fuzzed on its own, so a failure names the operation.
(Schemathesis's lazy pytest loader does not work with this pytest.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from medbay.common.events import MetricBatch

EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
"""Not the checks that want every schema violation refused (a repeated query parameter
is taken, as FastAPI does) or every valid input accepted (a random plan id is a 404)."""


@pytest.fixture
def hypothesis_home(tmp_path: Path) -> Iterator[None]:
    """Hypothesis's files in the test's directory, not in the checkout."""
    set_hypothesis_home_dir(tmp_path / "hypothesis")
    yield
    set_hypothesis_home_dir(None)


def test_api_answers_any_input_as_documented(gateway, publish_now, events, hypothesis_home):
    issue = events.issue()  # something to show: an incident with a plan done and one waiting
    done, waiting = events.plan(issue), events.plan(issue)
    publish_now(issue, done, events.approval(done), events.result(done), waiting)
    samples = [{"name": "cpu_percent", "value": 12.5, "labels": {"cpu": "0"}}]
    publish_now(
        events.resolved(issue),
        MetricBatch(host="web-1", collected_at=datetime.now(UTC), samples=samples),
    )
    deadline = time.monotonic() + 5
    while httpx.get(f"{gateway.url}/api/plans/{done.plan_id}", headers=gateway.viewer).is_error:
        assert time.monotonic() < deadline, "the seeded events never showed"
        time.sleep(0.05)
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    known = [  # random ids are 404s: these answers are checked against the document too
        ("/api/incidents/{fingerprint}", {"fingerprint": issue.fingerprint}),
        ("/api/plans/{plan_id}", {"plan_id": done.plan_id}),
        ("/api/metrics/{host}", {"host": "web-1"}),
    ]
    for path, parameters in known:
        case = schema[path]["GET"].Case(path_parameters=parameters)
        response = case.call_and_validate(headers=gateway.operator, checks=CHECKS)
        assert response.status_code == 200, response.text
    operations = [r.ok() for r in schema.get_all_operations() if isinstance(r, Ok)]
    assert len(operations) > 15
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
            def fuzz(case: schemathesis.Case[Any]) -> None:
                case.call_and_validate(headers=gateway.operator, checks=CHECKS)

            try:
                fuzz()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # no parameters: nothing to get wrong
