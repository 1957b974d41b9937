"""ingest: validate, normalise, deduplicate and route the raw topics; dead-letter the rest."""
