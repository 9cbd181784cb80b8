import sys
from pathlib import Path

import pytest

# Test helper modules (twin_helpers.py) import by plain name.
sys.path.insert(0, str(Path(__file__).parent))

# Fixtures of the instrument tests (drivers and emulators), shared by every test folder.
from instrument_helpers import clock, qdac_emulator, serve  # noqa: F401


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Heavy modules first, so that the README's ``pytest -n 2 --dist loadscope
    --no-loadscope-reorder`` does not end on one of them alone: modules holding ``slow`` tests,
    by the largest ``timeout`` mark among them (their authors' bound on their length), then the
    rest as collected (a stable sort)."""

    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::")[0]

    cost: dict[str, float] = {}
    for item in items:
        if item.get_closest_marker("slow") is None:
            continue
        mark = item.get_closest_marker("timeout")
        bound = float(mark.args[0]) if mark is not None and mark.args else 300.0
        cost[module(item)] = max(cost.get(module(item), 0.0), bound)
    items.sort(key=lambda item: -cost.get(module(item), 0.0))
