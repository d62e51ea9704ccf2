"""Reading and writing records: sources (files, PostgreSQL, dataset versions, Redis streams), sinks, Parquet helpers."""
