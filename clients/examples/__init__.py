"""Runnable examples of the t2mir client (``python -m clients.examples.<name>``)."""
