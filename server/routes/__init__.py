"""HTTP and WebSocket routes, one small router per concern."""

from server.routes.ops import router as ops_router
from server.routes.sessions import ActFastPath
from server.routes.sessions import router as sessions_router
from server.routes.ws import router as ws_router

__all__ = ["ActFastPath", "ops_router", "sessions_router", "ws_router"]
