"""The enricher: identity resolution, profiles, sessions, geofences and attribution (faust)."""
