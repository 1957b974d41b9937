"""The schema catalogue: one current schema per record type, old versions kept and readable."""

import json

from services.common.schemas import SCHEMA_DIR, SchemaCatalogue
from services.common.topics import RAW_TOPICS

ENVELOPE = [
    "message_id",
    "event_time",
    "received_time",
    "source",
    "app_id",
    "backfill",
    "identity",
    "context",
]


class TestCatalogue:
    def test_every_raw_topic_has_a_schema(self):
        """Each raw input topic names a record type whose schema file exists."""
        catalogue = SchemaCatalogue()
        for spec in RAW_TOPICS:
            assert catalogue.current(spec.record_type).path == SCHEMA_DIR / f"{spec.record_type}.avsc"

    def test_raw_records_share_one_envelope(self):
        """Every raw record starts with the same envelope fields, defined identically."""
        catalogue = SchemaCatalogue()
        first = None
        for spec in RAW_TOPICS:
            fields = catalogue.current(spec.record_type).raw["fields"][: len(ENVELOPE)]
            assert [f["name"] for f in fields] == ENVELOPE
            first = first or fields
            assert json.dumps(fields, sort_keys=True) == json.dumps(first, sort_keys=True)

    def test_old_versions_are_kept_with_distinct_fingerprints(self):
        """A history file is a different writer schema of the same type, found by fingerprint."""
        catalogue = SchemaCatalogue()
        versions = catalogue.versions("event")
        assert len(versions) >= 2
        assert len({v.fingerprint for v in versions}) == len(versions)
        for version in versions:
            assert catalogue.by_fingerprint(version.fingerprint).record_type == "event"


def test_readme_documents_every_field():
    """schemas/README.md names every field of every current schema."""
    text = (SCHEMA_DIR / "README.md").read_text()
    catalogue = SchemaCatalogue()
    for record_type in catalogue.record_types:
        assert f"`{record_type}`" in text
        for field in catalogue.current(record_type).raw["fields"]:
            assert field["name"] in text, f"{record_type}.{field['name']} undocumented"
