"""Shared fixtures: small synthetic cities, generated once per test session.

Other areas' tests use these by name; keep the names and keep them fast.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gate_kit import GATE_PASSPHRASE
from hypothesis import settings

from kansrijk.synth.city import CityPaths, generate_city


@pytest.fixture(scope="session", autouse=True)
def _gate_key_passphrase() -> Iterator[None]:
    """Every gate opened without an explicit passphrase reads $KANSRIJK_PASSPHRASE: the one ``gate_kit`` gives
    its gate keys, unless a test sets its own (its workspace's). Child processes inherit it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KANSRIJK_PASSPHRASE", GATE_PASSPHRASE)
        yield


@pytest.fixture(scope="session")
def small_city(tmp_path_factory: pytest.TempPathFactory) -> CityPaths:
    """A 3,000-person city, seed 7, reference year 2023, default fault rate (0.5%)."""
    return generate_city(tmp_path_factory.mktemp("small_city") / "city", persons=3_000, seed=7, years=(2023,))


@pytest.fixture(scope="session")
def small_city_multi_year(tmp_path_factory: pytest.TempPathFactory) -> CityPaths:
    """A 2,000-person city, seed 7, reference years 2022 and 2023, default fault rate."""
    return generate_city(
        tmp_path_factory.mktemp("small_city_multi_year") / "city", persons=2_000, seed=7, years=(2022, 2023)
    )


# No wall-clock limit per hypothesis example: a loaded CI machine (2 cores, xdist) makes it fail at random.
settings.register_profile("kansrijk", deadline=None)
settings.load_profile("kansrijk")
