"""Fixtures of the benchmark tests: the service tests' one-model repository, defined once there."""

from tests.service.conftest import bundle_repository  # noqa: F401  (fixture)
