"""The broadcaster's HTTP edge: the FastAPI app, its dependencies, error map, schemas and routers."""
