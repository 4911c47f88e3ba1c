"""One APIRouter per resource: board reads, the SSE stream, the live WebSocket, the demo page."""
