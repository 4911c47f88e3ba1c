"""The scorer's error map (``entrypoints.errors``): every domain exception once, in the error shape."""

from __future__ import annotations

import pytest

from leaderboard.scorer.entrypoints.errors import ERRORS, error_body, status_and_code
from leaderboard.scorer.errors import DomainError, Forbidden, Invalid, Unauthorized, Unavailable

CASES = [
    (Unauthorized("a bearer token is required"), 401, "unauthorized"),
    (Forbidden("the admin role is required", role="admin"), 403, "forbidden"),
    (Invalid("limit", "field 'limit': must lie in 1..1000"), 422, "invalid"),
    (Unavailable("the scorer is starting"), 503, "unavailable"),
]


@pytest.mark.parametrize(("exc", "status", "code"), CASES, ids=lambda v: type(v).__name__)
def test_each_refusal_maps_to_its_status_and_code(exc: DomainError, status: int, code: str) -> None:
    assert status_and_code(exc) == (status, code)
    assert error_body(exc) == {"status": "error", "error": exc.message, "code": code}
    assert str(exc) == exc.message


def test_every_domain_exception_is_mapped_and_tested() -> None:
    assert set(DomainError.__subclasses__()) == set(ERRORS) == {type(e) for e, _, _ in CASES}


def test_a_subclass_takes_its_parents_mapping() -> None:
    class NotConfigured(Unavailable):
        pass

    assert status_and_code(NotConfigured("no key")) == (503, "unavailable")
    assert status_and_code(DomainError("unmapped")) == (500, "internal")
