"""Thin Prefect tasks and the Ray actors they drive."""
