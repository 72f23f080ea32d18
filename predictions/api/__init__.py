"""API for this app."""
