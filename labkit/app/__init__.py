"""The lab's instrumented copy of the shop app: `create_app` (a `LabApp`), the databases it
measures (`SyncDatabase`, `AsyncDatabase`, `EngineOptions`), the in-process client, seeding,
`serve` (`run_workers` and `uvicorn_process`: the app under uvicorn in processes of its own) and
`for_browser` (such a server kept running for your browser).
"""
