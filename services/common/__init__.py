"""Shared plumbing: settings, topics, Avro serde, Kafka clients, ClickHouse access, metrics,
health, shutdown and logging. Services import from here; nothing here imports a service."""
