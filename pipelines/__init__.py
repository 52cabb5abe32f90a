"""Pools, score cache, executors, audit, backends, submit, ledger."""
