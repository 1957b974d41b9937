"""The loader: Kafka topics → ClickHouse tables in exactly-once batches, plus the analytics API."""
