import os
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"

os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # test_training's tiny job serves test_model_card too


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory):
    """The example third-party plugin and three broken ones, pip-installed into a private directory."""
    from tlkit.testing.plugins import install_plugins

    base = FIXTURES / "plugins"
    return install_plugins([base / n for n in ("example", "broken", "typo", "old")], tmp_path_factory.mktemp("plugins"))
