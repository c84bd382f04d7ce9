import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_FIXTURES = ROOT / "packages" / "core" / "tests" / "fixtures" / "plugins"
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def example_plugin_dir(tmp_path_factory):
    """The worked third-party example plugin, pip-installed into a private directory."""
    from tlkit.testing.plugins import install_plugins

    return install_plugins([PLUGIN_FIXTURES / "example"], tmp_path_factory.mktemp("plugins"))
