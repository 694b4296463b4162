"""The Java .properties filters (filter_plugins/java_properties.py).

Round trip: text escaped by our filters and read back by an independent
parser (jproperties, PyPI, which implements java.util.Properties.load's
rules) equals the original; and the file is pure ASCII, so Java reading it
as ISO-8859-1 and Ansible writing it as UTF-8 cannot disagree. The last test
goes through Ansible's own templating, as the bigbluebutton role's
bbb-web.properties template does.
"""

import importlib.util
import io
from pathlib import Path

import pytest
from jproperties import Properties

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "java_properties", REPO / "filter_plugins" / "java_properties.py"
)
java_properties = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(java_properties)
escape_value = java_properties.java_properties_value
escape_key = java_properties.java_properties_key

SAMPLES = [
    "Selamat datang di <b>%%CONFNAME%%</b>!",
    "Rapat — dimulai pukul 09.00 WITA",  # em dash: outside ISO-8859-1
    "Café, naïve, ½",  # inside ISO-8859-1 but not ASCII
    "ꦱꦼꦭꦩꦠ꧀",  # Javanese script
    "Emoji 🎥 and 👋",  # beyond the BMP: surrogate pairs
    "a=b:c #not a comment ! neither",
    "  leading blanks and trailing  ",
    "line one\nline two\r\nthree\ttab\fform feed",
    "back\\slash and \\u0041 literally",
    "${bigbluebutton.web.serverURL}/smeeton/default.pdf",
    "",
    "%%DIALNUM%% / %%CONFNUM%%#",
]


def _load(text: str) -> dict:
    props = Properties()
    props.load(io.BytesIO(text.encode("iso-8859-1")), "iso-8859-1")
    return {key: props[key].data for key in props}


@pytest.mark.parametrize("value", SAMPLES)
def test_value_round_trips_through_a_java_properties_parser(value):
    line = f"key={escape_value(value)}\n"
    assert line.isascii()
    assert _load(line) == {"key": value}


@pytest.mark.parametrize("key", ["defaultWelcomeMessage", "a key=with:seps#!", "kunci—ü"])
def test_key_round_trips(key):
    line = f"{escape_key(key)}=value\n"
    assert line.isascii()
    assert _load(line) == {key: "value"}


def test_escapes_are_the_ones_native2ascii_writes():
    assert escape_value("—") == "\\u2014"
    assert escape_value("é") == "\\u00E9"
    assert escape_value("🎥") == "\\uD83C\\uDFA5"
    assert escape_value(" x") == "\\ x"
    assert escape_value(True) == "true"
    assert escape_value(None) == ""
    assert escape_value(5) == "5"


def test_whole_file_with_many_keys():
    data = {f"k{i}": v for i, v in enumerate(SAMPLES)}
    text = "# comment\n" + "".join(f"{escape_key(k)}={escape_value(v)}\n" for k, v in data.items())
    assert _load(text) == data


def test_through_ansible_templating():
    """The filters as Ansible loads them from filter_plugins/ (ansible.cfg)."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import add_all_plugin_dirs, filter_loader
    from ansible.template import Templar, trust_as_template

    filter_loader.add_directory(str(REPO / "filter_plugins"))
    add_all_plugin_dirs(str(REPO))
    data = {"defaultWelcomeMessage": SAMPLES[1], "defaultWelcomeMessageFooter": SAMPLES[4]}
    templar = Templar(loader=DataLoader(), variables={"props": data})
    text = templar.template(
        trust_as_template(
            "{% for k, v in props.items() %}"
            "{{ k | java_properties_key }}={{ v | java_properties_value }}\n"
            "{% endfor %}"
        )
    )
    assert text.isascii()
    assert _load(text) == data
