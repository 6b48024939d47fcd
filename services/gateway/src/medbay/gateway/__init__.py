"""Medbay gateway: the REST and WebSocket API and the dashboard."""
