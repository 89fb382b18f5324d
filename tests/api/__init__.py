"""The HTTP API and the IDE WebSocket over real HTTP, against a dev server and the product worker."""
