import json

from leaderboard.common.server import HeadLimits, guarded_protocol, refusal
from leaderboard.common.settings import HttpServiceSettings


def test_refusal_is_a_complete_response_in_the_error_shape() -> None:
    raw = refusal(431, "headers_too_large", "too many", "rid-1", [(b"server", b"uvicorn")])
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert b"server: uvicorn" in lines
    assert b"content-type: application/json" in lines
    assert b"x-request-id: rid-1" in lines
    assert b"connection: close" in lines
    assert b"content-length: %d" % len(body) in lines
    assert json.loads(body) == {"status": "error", "error": "too many", "code": "headers_too_large"}


def test_settings_bind_the_limits_to_the_protocol_uvicorn_runs() -> None:
    settings = HttpServiceSettings(
        http_max_header_bytes=4096,
        http_max_header_count=20,
        http_header_timeout_s=1.5,
        http_max_target_bytes=1000,
        http_keep_alive_s=30,
    )
    options = settings.uvicorn_options(8080)
    assert options["timeout_keep_alive"] == 30
    protocol = options["http"]
    assert protocol.limits == HeadLimits(max_bytes=4096, max_count=20, max_target_bytes=1000, timeout_s=1.5)
    assert guarded_protocol(HeadLimits()).limits == HeadLimits()
    defaults = HttpServiceSettings().uvicorn_options(8080)["http"].limits
    assert (defaults.max_bytes, defaults.max_count, defaults.timeout_s) == (16 * 1024, 100, 10.0)
    # Idle keep-alive outlives httpx's pool expiry (5 s) and load balancers' idle timeouts (60 s).
    assert HttpServiceSettings().uvicorn_options(8080)["timeout_keep_alive"] == 75
