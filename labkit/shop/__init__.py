"""The shop app, written as a FastAPI project writes it: nothing in it knows it is measured.

- `config`: where the database is (`DATABASE_URL`);
- `database`: engines, session factories and the per-request session dependencies;
- `models`: the tables and the API's schemas;
- `blocking`, `threadpool`, `async_session`: the same routes once per session setup;
- `errors`: bad input as 4xx, database outages as 503, never a bare 500;
- `sqlite_transactions`: SQLite transactions that begin where SQLAlchemy begins them (tests);
- `main`: the `app`.
"""
