"""Processes of a pod: the supervisor, the status board, the embedded redis-server."""
