from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """ur4rec's text-embedding cache (and any MovieLens lookup) stays inside the test's temp folder."""
    monkeypatch.setenv("UR4REC_DATA_DIR", str(tmp_path_factory.getbasetemp() / "ur4rec-cache"))
