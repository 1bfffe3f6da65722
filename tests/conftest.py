"""Test set-up shared by every layer: real servers come from the fixture modules below."""

import pytest

pytest_plugins = [
    "tests.fixtures.nats",
    "tests.fixtures.s3",
    "tests.fixtures.sql",
    "tests.fixtures.sim",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/unit are `unit` unless marked otherwise; likewise integration and e2e."""
    for item in items:
        path = str(item.fspath)
        for layer in ("unit", "integration", "e2e"):
            if f"/tests/{layer}/" in path and not any(m.name == layer for m in item.iter_markers()):
                item.add_marker(getattr(pytest.mark, layer))
