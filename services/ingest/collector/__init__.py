"""The HTTP collector: Segment-compatible tracking API, tags, locations, receipts, tracking links."""
