"""A feature that exists only for the tests: it plugs in every part a real
feature has (a content kind, a route, a setting, a readiness check, a
migration on both engines, a change-log worker, start and stop), so that
tests/feature_probe/test_plugs_in.py proves the mechanism end to end."""
