"""Models that scorers and backends train or load: the tiny CLIP, proxies, small LMs."""
