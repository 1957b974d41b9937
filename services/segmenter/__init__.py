"""Segmenter: segment definitions, membership with timers, the ClickHouse oracle (docs/segments.md)."""
