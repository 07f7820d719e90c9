"""A service run as many replicas: migrations once per deployment, a job on the leader.

See `examples.replicas.app` for what it declares and how to run it.
"""
