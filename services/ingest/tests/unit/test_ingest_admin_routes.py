"""The admin correction routes' gate and bodies, on the real app (the publishing path runs for real in
tests/e2e/test_corrections_api_live.py)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

USER = str(uuid.uuid4())
ROUTES = [
    (f"/api/v1/admin/users/{USER}/void", {"reason": "speed hack"}),
    (f"/api/v1/admin/users/{USER}/restore", {"reason": "appeal"}),
    (f"/api/v1/admin/users/{USER}/rename", {"username": "Reformed", "reason": "offensive"}),
    (f"/api/v1/admin/actions/{uuid.uuid4()}/void", {"userId": USER, "reason": "duplicate"}),
]


@pytest.mark.parametrize(("path", "body"), ROUTES)
@pytest.mark.parametrize("role", ["player", "service"])
async def test_only_admins_may_correct_and_others_are_refused_before_any_charge(
    harness: Any, path: str, body: dict[str, str], role: str
) -> None:
    r = await harness.client.post(path, json=body, headers=harness.auth(role))
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    assert "admin role" in r.json()["error"]
    assert harness.limiter.calls == []


@pytest.mark.parametrize(("path", "body"), ROUTES)
async def test_an_admin_past_the_rate_limit_is_429(harness: Any, path: str, body: dict[str, str]) -> None:
    harness.limiter.allowed = False
    r = await harness.client.post(path, json=body, headers=harness.auth("admin"))
    assert (r.status_code, r.json()["code"], r.headers["retry-after"]) == (429, "rate_limited", "7")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (f"/api/v1/admin/users/{USER}/void", {"reason": ""}, "reason"),
        (f"/api/v1/admin/users/{USER}/void", {"reason": "x" * 501}, "reason"),
        (f"/api/v1/admin/users/{USER}/void", {"reason": "nul\u0000"}, "reason"),
        (f"/api/v1/admin/users/{USER}/rename", {"username": "", "reason": "r"}, "username"),
        (f"/api/v1/admin/users/{USER}/rename", {"username": "a", "reason": "r", "extra": 1}, "extra"),
        ("/api/v1/admin/users/not-a-uuid/void", {"reason": "r"}, "user_id"),
        (f"/api/v1/admin/actions/{uuid.uuid4()}/void", {"reason": "r"}, "userId"),
    ],
)
async def test_bad_bodies_are_422_naming_the_field(
    harness: Any, path: str, body: dict[str, Any], field: str
) -> None:
    r = await harness.client.post(path, json=body, headers=harness.auth("admin"))
    assert (r.status_code, r.json()["code"]) == (422, "invalid"), r.text
    assert field in r.json()["error"]
