"""Name and type resolution (and, later, plans, optimizer rules and lowering)."""
