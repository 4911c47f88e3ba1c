from leaderboard.common.web import ClientIpResolver


def test_forwarded_for_ignored_without_trusted_proxy() -> None:
    assert ClientIpResolver([])("10.0.0.5", "1.2.3.4") == "10.0.0.5"


def test_forwarded_for_from_trusted_proxy_takes_rightmost_untrusted_hop() -> None:
    resolve = ClientIpResolver(["10.0.0.0/8"])
    assert resolve("10.0.0.5", "6.6.6.6, 1.2.3.4, 10.1.1.1") == "1.2.3.4"
    assert resolve("192.0.2.1", "1.2.3.4") == "192.0.2.1"  # peer not trusted: spoofable header ignored
    assert resolve("10.0.0.5", "garbage") == "10.0.0.5"
