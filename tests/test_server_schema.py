"""The OpenAPI schema against the running server: schemathesis generates requests from it for
every route (valid and invalid ones) and checks that none is a server error and that each
status, content type and header the server answers is the one its schema documents."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance
from server_helpers import ADMIN, metric_samples, running_server, served_carrier

# Requests per route. Bounded: loopback only, and the default test run stays short.
EXAMPLES = 50


@pytest.fixture(scope="module")
def served(fixed_response_carrier, tmp_path_factory):
    return served_carrier(fixed_response_carrier.carrier, tmp_path_factory.mktemp("schema"))


@pytest.mark.parametrize("admin", [False, True], ids=["no-token", "admin-token"])
def test_every_answer_is_documented_and_none_is_a_server_error(served, admin):
    # Short replies, so that generated requests are cheap to serve on a tiny model.
    limits = dict(default_max_tokens=2, max_tokens_limit=4, body_timeout_s=2.0)
    with running_server(served, **limits) as (url, app):
        schema = schemathesis.openapi.from_url(url + "/openapi.json")
        headers = ADMIN if admin else {}
        failures = []
        for result in schema.get_all_operations():
            operation = result.ok()

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,  # the same requests on every run
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case):
                if isinstance(case.body, dict) and "model" in case.body:
                    # A random model name stops every request at the 404; go past it.
                    case.body["model"] = served.model_name
                # Schema-valid requests may still be refused by limits the schema cannot state
                # (prompt tokens, the context, max_tokens over --max-tokens-limit): 400 is right.
                case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

            try:
                check()
            except BaseException as e:  # schemathesis reports with an exception group
                failures.append(f"{operation.label}: {e}")
        assert not failures, "\n\n".join(failures)
        # The generated requests got past validation into generation, not only into 4xx.
        answered = {
            (dict(labels)["route"], dict(labels)["status"]): n
            for (name, labels), n in metric_samples(url).items()
            if name == "sft_eraser_requests_total"
        }
        for route in ("/v1/chat/completions", "/v1/completions"):
            assert answered.get((route, "200"), 0) >= 5, answered
