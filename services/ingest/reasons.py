"""Dead-letter reason codes ingest uses; the README lists them for operators."""

UNDECODABLE = "undecodable"  # bytes are not an Avro record of ours in either framing
OVERSIZED = "oversized"  # the record, or its properties, exceed the configured size
SCHEMA_VIOLATION = "schema_violation"  # decodes, but a required value is empty or inconsistent
MISSING_IDENTITY = "missing_identity"  # no identifier at all (or none a personalize needs)
TIME_OUT_OF_RANGE = "time_out_of_range"  # event_time too far in the future or past the horizon
VALUE_OUT_OF_RANGE = "value_out_of_range"  # latitude/longitude/accuracy/length/depth bounds
INVALID_EMAIL = "invalid_email"
INVALID_PHONE = "invalid_phone"
UNKNOWN_STATUS = "unknown_status"  # delivery receipt status not known for its channel
TYPE_MISMATCH = "type_mismatch"  # attribute or declared-event property of the wrong type
UNKNOWN_PROPERTY = "unknown_property"  # property not in the declared event's definition
UNDECLARED_EVENT = "undeclared_event"  # event not declared, from a source that requires declarations
