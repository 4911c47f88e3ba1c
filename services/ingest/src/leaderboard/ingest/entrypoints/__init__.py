"""Ingest's HTTP entrypoint: the FastAPI app, its dependencies, its error map and its routers."""
