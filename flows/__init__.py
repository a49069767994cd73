"""Prefect flows and the campaign planning they run."""
