"""The engine: a lowered plan against a pool -> a selection (execution, score cache, audit)."""
