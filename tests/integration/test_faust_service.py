"""The faust services' changelog topics exist before the worker starts (services/common/faust_service.py):
without that, a consumer's first metadata snapshot can see a changelog with 0 partitions and crash
the agent on every event with PartitionsMismatch (seen in `make chaos`)."""

from __future__ import annotations

import pytest

from services.common.faust_service import ensure_changelog_topics
from services.common.kafka import make_admin, topic_config
from services.trigger.app import build_app
from services.trigger.settings import TriggerSettings

pytestmark = pytest.mark.integration


def test_changelog_topics_are_created_before_the_worker(settings):
    s = TriggerSettings(
        kafka_bootstrap=settings.kafka_bootstrap,
        topic_prefix=settings.topic_prefix,
        data_dir=settings.data_dir,
    )
    app = build_app(s)
    expected = {f"{s.full_app_id}-{table}-changelog" for table in ("persons", "states", "broadcasts")}

    assert set(ensure_changelog_topics(app, s)) == expected
    topics = make_admin(s).list_topics(timeout=30).topics
    for name in expected:
        assert len(topics[name].partitions) == 6  # co-partitioned with the trigger's inputs
        assert topic_config(s, name)["cleanup.policy"] == "compact"
    assert ensure_changelog_topics(app, s) == []  # idempotent: a restart creates nothing
