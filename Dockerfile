# One image for the three services; the command picks the service (`leaderboard ingest|scorer|broadcaster`).
FROM python:3.11-slim AS build
RUN python -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir "uv==0.13.9"
WORKDIR /app
COPY pyproject.toml requirements.lock ./
COPY libs libs
COPY services services
COPY tools tools
RUN /opt/uv/bin/uv venv /venv && VIRTUAL_ENV=/venv /opt/uv/bin/uv pip sync --no-cache requirements.lock

FROM python:3.11-slim
RUN useradd --system --uid 10001 app
COPY --from=build /venv /venv
COPY --from=build /app /app
WORKDIR /app
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 LEADERBOARD_HOST=0.0.0.0 LEADERBOARD_SCORER_WEB_HOST=0.0.0.0
USER app
EXPOSE 8080 8090 6066
ENTRYPOINT ["leaderboard"]
