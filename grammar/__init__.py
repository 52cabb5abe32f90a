"""The grammar file, shipped as package data."""
