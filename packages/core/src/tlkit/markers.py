"""pluggy markers and the entry-point group every tlkit plugin registers under."""

import pluggy

PROJECT_NAME = "tlkit"
ENTRY_POINT_GROUP = "tlkit.plugins"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
