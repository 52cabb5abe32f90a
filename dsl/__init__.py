"""The language: AST models, parser front end, formatter, diagnostics."""
