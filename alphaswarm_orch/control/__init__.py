"""Operational control: the kill switch, Redis key names, health and metrics."""
