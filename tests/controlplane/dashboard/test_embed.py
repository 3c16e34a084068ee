"""Device-reported text in a page's JSON blocks cannot end or alter the <script> block."""

from __future__ import annotations

import json

from controlplane.dashboard.embed import script_json

HOSTILE = "tiny</script><!--<script>alert(1)</script>&amp;"


def test_script_json_reads_back_the_same_and_holds_no_markup() -> None:
    text = script_json({"series": [{"name": HOSTILE}]})
    assert not set("<>&") & set(text)
    assert json.loads(text) == {"series": [{"name": HOSTILE}]}
