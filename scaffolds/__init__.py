"""The method catalogue, scaffold modes and their AST checks."""
