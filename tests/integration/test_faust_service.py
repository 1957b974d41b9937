"""The shared faust worker creates its tables' changelog topics before faust's consumer starts."""

import pytest

from services.common.faust_service import ensure_changelog_topics
from services.common.kafka import make_admin, topic_config
from services.common.topics import ENRICHED, ENRICHER_IDENTITY, ENRICHER_ROUTED, topic_name
from services.enricher.app import build_app as enricher_app
from services.enricher.settings import EnricherSettings
from services.segmenter.app import build_app as segmenter_app
from services.segmenter.settings import SegmenterSettings


def _partitions(settings, name: str) -> int:
    return len(make_admin(settings).list_topics(name, timeout=10).topics[name].partitions)


@pytest.mark.integration
def test_changelogs_exist_compacted_and_co_partitioned_with_their_source_before_the_worker_runs(
    settings, tmp_path
):
    """Without this, a service's first start on a fresh cluster crash-loops with PartitionsMismatch
    ("changelog topic has 0 partitions") until faust's next metadata refresh, minutes later."""
    common = {"kafka_bootstrap": settings.kafka_bootstrap, "topic_prefix": settings.topic_prefix}
    enricher = EnricherSettings(**common, data_dir=tmp_path / "e")
    segmenter = SegmenterSettings(**common, data_dir=tmp_path / "s")

    created = ensure_changelog_topics(enricher_app(enricher), enricher)
    created += ensure_changelog_topics(segmenter_app(segmenter), segmenter)

    prefix = settings.topic_prefix
    expected = {
        f"{prefix}tagstream-enricher-identity-changelog": topic_name(ENRICHER_IDENTITY, settings),
        f"{prefix}tagstream-enricher-persons-changelog": topic_name(ENRICHER_ROUTED, settings),
        f"{prefix}tagstream-segmenter-persons-changelog": topic_name(ENRICHED, settings),
    }
    assert sorted(created) == sorted(expected)
    for changelog, source in expected.items():
        assert _partitions(settings, changelog) == _partitions(settings, source)
        assert topic_config(settings, changelog)["cleanup.policy"] == "compact"
    assert ensure_changelog_topics(enricher_app(enricher), enricher) == []  # idempotent
