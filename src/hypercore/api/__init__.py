"""The node agent's HTTP API (server in app.py, client in client.py)."""
