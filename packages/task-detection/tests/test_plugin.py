"""The tlkit_detection plugin installs alone next to tlkit-core, is discovered through its entry point, and stays light."""

import json

from tlkit.testing.contract import check_plugin_module_is_light
from tlkit.testing.plugins import run_tlkit


def test_entry_point_is_discovered_and_loads():
    r = run_tlkit(["plugins", "--json"])
    assert r.returncode == 0, r.stderr
    info = {p["name"]: p for p in json.loads(r.stdout)}["detection"]
    assert info["status"] == "ok", info
    assert info["module"] == "tlkit_detection.plugin"


def test_plugin_module_is_light():
    check_plugin_module_is_light("tlkit_detection.plugin")
