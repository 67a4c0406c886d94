"""The AET dictionary: reference format, three sources, errors that name the entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.dimse.aet_dictionary import ENV_AETS_JSON, load_aet_dictionary, parse_aet_dictionary
from common.dimse.sender import PeerAddress
from common.errors import ConfigError


def test_reference_format_and_lookup() -> None:
    aets = parse_aet_dictionary(
        '[{"name": "WS1", "host": "10.0.0.7", "port": 104},'
        ' {"name": "PACS", "host": "pacs", "port": "11112"}]', source="test")
    assert aets.lookup("WS1 ") == PeerAddress("WS1", "10.0.0.7", 104)
    assert aets.lookup("PACS") == PeerAddress("PACS", "pacs", 11112)
    assert aets.lookup("NOBODY") is None
    assert len(aets) == 2


@pytest.mark.parametrize(("text", "message"), [
    ("{", "not valid JSON"),
    ('{"name": "A"}', "must be a JSON array"),
    ('[{"name": "A", "host": "h", "port": 1}, {"name": "B", "host": "h"}]', "entry 1 ('B') lacks port"),
    ('[{"name": "A", "host": "h", "port": 70000}]', "entry 0 ('A'): port"),
    ('[{"name": "ABCDEFGHIJKLMNOPQ", "host": "h", "port": 1}]', "longer than 16"),
    ('[{"name": "A", "host": "", "port": 1}]', "host must be"),
    ('[{"name": "A", "host": "h", "port": 1, "x": 1}]', "unknown key(s) x"),
    ('[{"name": "A", "host": "h", "port": 1}, {"name": "A", "host": "g", "port": 2}]',
     "entry 1 ('A') repeats the AE title of entry 0"),
    ('["A"]', "entry 0 is not an object"),
])
def test_errors_point_at_the_entry(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^src") as info:
        parse_aet_dictionary(text, source="src")
    assert message in str(info.value)


def test_sources(tmp_path: Path) -> None:
    path = tmp_path / "aets.json"
    path.write_text('[{"name": "F", "host": "h", "port": 1}]')
    assert load_aet_dictionary(path=path).lookup("F")
    assert load_aet_dictionary(inline='[{"name": "I", "host": "h", "port": 1}]').lookup("I")
    env = {ENV_AETS_JSON: '[{"name": "E", "host": "h", "port": 1}]'}
    assert load_aet_dictionary(environ=env).lookup("E")
    assert len(load_aet_dictionary(environ={})) == 0
    with pytest.raises(ConfigError, match="not both"):
        load_aet_dictionary(path=path, inline="[]")
    with pytest.raises(ConfigError, match="cannot read"):
        load_aet_dictionary(path=tmp_path / "missing.json")
