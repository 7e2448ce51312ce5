"""The HTTP API under /v1, health endpoints and the OpenAPI document."""
