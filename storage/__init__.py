"""The lake: pyarrow schemas, atomic partition writes and the DuckDB catalog (no prefect, no ray)."""
