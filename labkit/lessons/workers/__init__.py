"""Notebook 10's experiments: several worker processes, ``max_connections``, PgBouncer's
transaction pooling (prepared statements, session state), and pools across ``fork``.
"""
