"""Pool data: pools and their cards, assets, importers, exports, the synthetic generator and the demo pools."""
