"""A real STAC API (stac-fastapi-pgstac on PostgreSQL) on 127.0.0.1 for tests: see README.md."""
