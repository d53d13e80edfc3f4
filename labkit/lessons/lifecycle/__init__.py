"""Notebook 08's apps and experiments: when each step of a request runs, one session for every
dependency, work after the response, and the client that goes away.
"""
