"""One APIRouter per resource: the catalog, player actions, service events, dev conveniences."""
