"""tagstream: a Kafka-native pipeline for behavioural customer data.

Each subpackage is one service (ingest, enricher, segmenter, trigger, loader) except
``common`` (plumbing every service imports) and ``cli`` (the ``tagstream`` command).
"""
