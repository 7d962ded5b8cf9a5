"""Schemathesis against the API's own OpenAPI schema (/api/v1/schema/), in-process through
Django's WSGI application: for each operation, generated requests (valid, and for the
negative phase malformed ones) by a manager holding a token must never meet a 5xx, and every
answer must conform to the schema (status, content type, body). Each example is tried on a
random slug (a 404) and on the manager's own team, which has positions."""

from datetime import UTC, datetime

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings

from teams import services
from tracking.models import StoredPosition

pytestmark = [
    pytest.mark.django_db,
    # Through WSGI, Django drains the exports' async stream itself and says so; daphne streams it.
    pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous"),
]

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def api_schema():
    return schemathesis.openapi.from_wsgi("/api/v1/schema/", get_wsgi_application())


@pytest.fixture
def manager_token(world):
    """ann's token; her team alpha has positions (with and without the optional fields), and
    bravo (bob's) has some she must never see."""
    for second in range(0, 600, 60):
        for worker in (world.a1, world.a2, world.b1):
            StoredPosition.objects.create(
                team=worker.team,
                worker=worker,
                ts=T0 + second,
                lat=41.0 + second / 1e4,
                lng=2.0,
                **({"acc": 5.0, "batt": 50.0} if second % 120 else {}),
            )
    _, token = services.api_token_create(user=world.ann, name="schemathesis")
    return token


schema = schemathesis.pytest.from_fixture("api_schema")
# "A schema-valid request is accepted" cannot hold: OpenAPI has no way to say that `since` comes
# before `until`, which the API checks (400 with the reason, tested in test_api.py).
EXCLUDED = [schemathesis.checks.positive_data_acceptance]


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_api_conforms_to_its_schema(case, manager_token, world):
    # A case whose headers are generated malformed (negative phase) keeps its own Authorization
    # (a 401 is expected); every other one is the manager's.
    negative = case.meta is not None and case.meta.is_negative_at
    auth = {} if negative and negative("header") else {"Authorization": f"Bearer {manager_token}"}
    case.call_and_validate(headers=auth, excluded_checks=EXCLUDED)
    if "slug" in (case.path_parameters or {}) and not (negative and negative("path")):
        case.path_parameters = {**case.path_parameters, "slug": world.alpha.slug}
        case.call_and_validate(headers=auth, excluded_checks=EXCLUDED)
