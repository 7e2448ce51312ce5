"""The WebSocket gateway: sessions, local fan-out, receipts and heartbeats."""
