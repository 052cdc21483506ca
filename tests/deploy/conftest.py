from pathlib import Path

import pytest
from local.build import current_build


@pytest.fixture(scope="session")
def sam_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory ``sam build`` built the current sources into (once per run)."""
    return current_build(tmp_path_factory.mktemp("sam-build"))
