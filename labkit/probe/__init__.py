"""``python -m labkit probe module:app``: the bench pointed at an app the lab did not write."""
