"""Servers the lab starts or finds: PostgreSQL, and the app under uvicorn in its own process."""
