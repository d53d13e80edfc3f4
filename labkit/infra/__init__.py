"""What the lab runs on: PostgreSQL servers and a fresh database per notebook, PgBouncer, uvicorn
processes, free ports, the reaper that cleans up after a killed kernel, Jupyter's proxy, and
the Binder badge.
"""
