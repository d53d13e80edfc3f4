"""One module, or one folder, per notebook topic that needs an app or an experiment of its own.

- `commit` (03), `loading` (04), `concurrency` (05, 07), `lifecycle` (08), `transactions` (09),
  `workers` (10), `kernel_cost` (00: the event loop a notebook runs on);
- `timeline`: what the lesson apps log, kept in order on one clock.
"""
