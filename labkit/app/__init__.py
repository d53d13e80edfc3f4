"""The lab's instrumented copy of the learner's app: `create_app`, the databases it measures
(`SyncDatabase`, `AsyncDatabase`, `EngineOptions`), the in-process client, seeding, and `serve`,
which runs it under uvicorn in processes of its own.
"""
