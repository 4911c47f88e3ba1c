from leaderboard.common.web import ClientIpResolver


def test_forwarded_for_ignored_without_trusted_proxy() -> None:
    assert ClientIpResolver([])("10.0.0.5", "1.2.3.4") == "10.0.0.5"


def test_forwarded_for_from_trusted_proxy_takes_rightmost_untrusted_hop() -> None:
    resolve = ClientIpResolver(["10.0.0.0/8"])
    assert resolve("10.0.0.5", "6.6.6.6, 1.2.3.4, 10.1.1.1") == "1.2.3.4"
    assert resolve("192.0.2.1", "1.2.3.4") == "192.0.2.1"  # peer not trusted: spoofable header ignored
    assert resolve("10.0.0.5", "garbage") == "10.0.0.5"


async def test_cors_refusals_use_the_error_shape_and_carry_the_request_id() -> None:
    import httpx
    from fastapi import FastAPI

    from leaderboard.common.web import RequestIdMiddleware, add_cors

    app = FastAPI()

    @app.post("/x")
    async def x() -> dict[str, int]:
        return {"ok": 1}

    add_cors(app, ["https://good.example"], methods=["POST"], headers=["Authorization"])
    app.add_middleware(RequestIdMiddleware)
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        ok = await client.options("/x", headers={"Origin": "https://good.example", **preflight})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://good.example"
        for origin, extra, refused in [
            ("https://evil.example", {}, "origin"),
            ("https://good.example", {"Access-Control-Request-Method": "DELETE"}, "method"),
            ("https://good.example", {"Access-Control-Request-Headers": "x-evil"}, "headers"),
        ]:
            r = await client.options(
                "/x", headers={**preflight, "Origin": origin, "X-Request-ID": "rid-7", **extra}
            )
            assert r.status_code == 403, r.text
            assert r.headers["content-type"] == "application/json"
            assert r.json()["status"] == "error" and r.json()["code"] == "forbidden"
            assert refused in r.json()["error"]
            assert r.headers["x-request-id"] == "rid-7"
