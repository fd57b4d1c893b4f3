"""Prefect flows (the deployments' entrypoints) and the `illume` command line."""
