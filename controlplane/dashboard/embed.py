"""JSON for the pages' `<script type="application/json">` blocks (charts, model history)."""

from __future__ import annotations

import json
from typing import Any

# Device-reported text (model names, classes) ends up in these blocks: `</script>` would end
# the block and `<!--<script>` would swallow the rest of the page. Escaped as \\uXXXX, which
# JSON.parse reads back as the same characters.
_UNSAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def script_json(value: Any) -> str:
    """`value` as JSON that cannot end or alter the `<script>` block it is embedded in."""
    return json.dumps(value).translate(_UNSAFE)
