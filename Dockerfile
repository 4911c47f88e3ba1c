# syntax=docker/dockerfile:1
# One image for the three services; the command picks the service:
#   docker build -t leaderboard .            (the last stage, `service`, is the default target)
#   docker run leaderboard ingest|scorer|broadcaster
# Everything installed comes from the committed, hashed requirements.lock. The service image holds the
# services and libs/common only: no `leaderboard` CLI, no embedded Kafka/Redis/Postgres, no test harness
# (deploy/docker/service_requirements.py filters the lock). The `tools` target adds the CLI for operators
# (`leaderboard token`, `replay`, `simulate`): docker build --target tools -t leaderboard-tools .

FROM python:3.11-slim-bookworm AS uv
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir "uv==0.13.9"
WORKDIR /src
COPY requirements.lock deploy/docker/service_requirements.py ./
COPY libs/common/pyproject.toml libs/common/pyproject.toml
COPY services/ingest/pyproject.toml services/ingest/pyproject.toml
COPY services/scorer/pyproject.toml services/scorer/pyproject.toml
COPY services/broadcaster/pyproject.toml services/broadcaster/pyproject.toml
COPY tools/cli/pyproject.toml tools/cli/pyproject.toml
COPY tools/testkit/pyproject.toml tools/testkit/pyproject.toml

# The service venv: the lock's own pins and hashes for what the members need (a dependency layer that
# is rebuilt only when the lock changes), then the members themselves without resolving anything.
FROM uv AS build
ENV UV_NO_CACHE=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy VIRTUAL_ENV=/venv
RUN python service_requirements.py requirements.lock libs/common services/ingest services/scorer \
        services/broadcaster > service-requirements.txt \
    && /opt/uv/bin/uv venv --python "$(command -v python)" /venv \
    && /opt/uv/bin/uv pip sync --require-hashes service-requirements.txt
COPY libs/common libs/common
COPY services services
RUN /opt/uv/bin/uv pip install --no-deps ./libs/common ./services/ingest ./services/scorer ./services/broadcaster \
    && /opt/uv/bin/uv pip check

# The operators' venv: the same plus the CLI member and what it needs (the dev-only testkit with the
# embedded stack included, for `leaderboard dev`/`stack`).
FROM uv AS build-tools
ENV UV_NO_CACHE=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy VIRTUAL_ENV=/venv
RUN python service_requirements.py requirements.lock libs/common services/ingest services/scorer \
        services/broadcaster tools/cli tools/testkit > tools-requirements.txt \
    && /opt/uv/bin/uv venv --python "$(command -v python)" /venv \
    && /opt/uv/bin/uv pip sync --require-hashes tools-requirements.txt
COPY libs/common libs/common
COPY services services
COPY tools/cli tools/cli
COPY tools/testkit tools/testkit
RUN /opt/uv/bin/uv pip install --no-deps ./libs/common ./services/ingest ./services/scorer \
        ./services/broadcaster ./tools/cli ./tools/testkit \
    && /opt/uv/bin/uv pip check

FROM python:3.11-slim-bookworm AS runtime
# uid/gid 10001: the Kubernetes manifests' runAsUser/runAsGroup/fsGroup. /keys is created here, owned by
# the app user, so a named volume mounted on it starts with that ownership (compose's dev keys).
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/leaderboard \
        --shell /usr/sbin/nologin app \
    && mkdir -p /var/lib/leaderboard/scorer /keys \
    && chown -R 10001:10001 /var/lib/leaderboard /keys
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LEADERBOARD_HOST=0.0.0.0 \
    LEADERBOARD_SCORER_WEB_HOST=0.0.0.0 \
    LEADERBOARD_SCORER_DATADIR=/var/lib/leaderboard/scorer \
    LEADERBOARD_KEYS_DIR=/keys
WORKDIR /var/lib/leaderboard
COPY deploy/docker/service.py /opt/leaderboard/service.py

FROM runtime AS tools
COPY --from=build-tools /venv /venv
USER 10001:10001
HEALTHCHECK NONE
ENTRYPOINT ["leaderboard"]
CMD ["--help"]

FROM runtime AS service
COPY --from=build /venv /venv
USER 10001:10001
# 8080 ingest, 8090 broadcaster, 6066 scorer (/healthz, /readyz, /metrics on each).
EXPOSE 8080 8090 6066
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/opt/leaderboard/service.py", "healthcheck"]
ENTRYPOINT ["python", "/opt/leaderboard/service.py"]
CMD ["ingest"]
