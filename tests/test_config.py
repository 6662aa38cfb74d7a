import dataclasses
import datetime
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from hypothesis import assume, example, given, note, strategies as st

try:
    import tomllib
except ModuleNotFoundError:
    import tomli as tomllib

from azprov.address import parse_address
from azprov.host import Host
from azprov.config import (
    CONFIG_FILE,
    CONFIG_SIZE_LIMIT,
    Config,
    DROPIN_DIR,
    HttpConfig,
    ImdsConfig,
    ProvisioningConfig,
    WireServerConfig,
    load_config,
    render_toml,
)
from azprov.errors import ConfigError, ExitCode
from support.strategies import ANY_TEXT, addresses, characters, fuzz, mutated, utf8

SHIPPED = Path(__file__).parent.parent / "packaging" / "azprov.toml"


def write(root: Path, relative: str, text) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_defaults_without_any_file(tmp_path):
    config = load_config(Host(str(tmp_path)))
    assert config == Config()
    assert config.sources == ()
    assert config.wireserver.address is None
    assert config.wireserver.deadline == 1200.0
    assert str(config.imds.address) == "169.254.169.254"
    assert config.http == HttpConfig(3.0, 30.0, 60.0, 0.5, 3.0, True)
    assert config.provisioning.admin_groups == ("sudo", "wheel")


def test_file_and_dropins_in_lexical_order(tmp_path):
    main = write(tmp_path, CONFIG_FILE, '[http]\nconnect_timeout = 5\nread_timeout = 10.5\n[imds]\ndeadline = 100\n')
    second = write(tmp_path, f"{DROPIN_DIR}/20-second.toml", "[http]\nread_timeout = 20\n")
    first = write(tmp_path, f"{DROPIN_DIR}/10-first.toml", "[http]\nread_timeout = 15\njitter = false\n")
    write(tmp_path, f"{DROPIN_DIR}/30-ignored.conf", "not toml at all [")
    config = load_config(Host(str(tmp_path)))
    assert config.http.connect_timeout == 5.0 and isinstance(config.http.connect_timeout, float)
    assert config.http.read_timeout == 20.0
    assert config.http.jitter is False
    assert config.imds.deadline == 100.0
    assert config.http.attempt_timeout == 60.0  # untouched default
    assert config.sources == (str(main), str(first), str(second))


def test_dropins_without_main_file(tmp_path):
    dropin = write(tmp_path, f"{DROPIN_DIR}/50.toml", '[wireserver]\naddress = "10.0.0.9"\n')
    config = load_config(Host(str(tmp_path)))
    assert str(config.wireserver.address) == "10.0.0.9"
    assert config.sources == (str(dropin),)


def test_overrides_win_and_none_means_not_given(tmp_path):
    write(tmp_path, CONFIG_FILE, '[wireserver]\naddress = "10.0.0.9"\n[imds]\naddress = "10.0.0.8"\n')
    config = load_config(
        Host(str(tmp_path)),
        overrides={"wireserver": {"address": "127.0.0.1:8080"}, "imds": {"address": None}},
    )
    assert str(config.wireserver.address) == "127.0.0.1:8080"
    assert str(config.imds.address) == "10.0.0.8"


def test_empty_address_means_discover(tmp_path):
    write(tmp_path, CONFIG_FILE, '[wireserver]\naddress = "10.0.0.9"\n')
    write(tmp_path, f"{DROPIN_DIR}/a.toml", '[wireserver]\naddress = ""\n')
    assert load_config(Host(str(tmp_path))).wireserver.address is None


@pytest.mark.parametrize("address", ["168.63.129.16", "127.0.0.1:8080", "http://localhost:8080", "http://[::1]:80/", "wire.example"])
def test_address_forms_accepted(tmp_path, address):
    assert str(load_config(Host(str(tmp_path)), overrides={"imds": {"address": address}}).imds.address) == address


@pytest.mark.parametrize("address", ["https://168.63.129.16", "http://x/machine", "a b", "x:0", "x:70000", "-x", "::1"])
def test_address_forms_refused(tmp_path, address):
    with pytest.raises(ConfigError, match=r"^command line: \[imds\] address: expected HOST"):
        load_config(Host(str(tmp_path)), overrides={"imds": {"address": address}})


def test_overrides_are_validated(tmp_path):
    with pytest.raises(ConfigError, match=r"^command line: \[http\] connect_timeout: expected a number, got string \"3\"$"):
        load_config(Host(str(tmp_path)), overrides={"http": {"connect_timeout": "3"}})
    with pytest.raises(ConfigError, match=r"^command line: unknown section \[htp\] \(did you mean 'http'\?\)"):
        load_config(Host(str(tmp_path)), overrides={"htp": {"connect_timeout": 3}})


def test_error_example_from_the_documentation(tmp_path):
    path = write(tmp_path, CONFIG_FILE, '[http]\nconnect_timeout = "x"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(Host(str(tmp_path)))
    assert str(caught.value) == f'{path}: [http] connect_timeout: expected a number, got string "x"'
    assert caught.value.exit_code == ExitCode.CONFIG
    assert caught.value.details == {"source": str(path), "key": "http.connect_timeout"}


def test_unknown_section(tmp_path):
    path = write(tmp_path, CONFIG_FILE, "[provisionning]\nset_hostname = false\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: unknown section [provisionning] (did you mean 'provisioning'?)")):
        load_config(Host(str(tmp_path)))


def test_unknown_key_in_dropin_names_the_dropin(tmp_path):
    write(tmp_path, CONFIG_FILE, "[http]\nconnect_timeout = 2\n")
    path = write(tmp_path, f"{DROPIN_DIR}/10.toml", "[http]\nconect_timeout = 2\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: [http] conect_timeout: unknown key (did you mean 'connect_timeout'?)")):
        load_config(Host(str(tmp_path)))


def test_key_outside_any_section(tmp_path):
    write(tmp_path, CONFIG_FILE, "deadline = 3\n")
    with pytest.raises(ConfigError, match=r"deadline: every setting belongs in a section \(\[wireserver\]"):
        load_config(Host(str(tmp_path)))


def test_section_that_is_not_a_table(tmp_path):
    with pytest.raises(ConfigError, match=r"\[http\]: expected a table of settings, got integer 3"):
        load_config(Host(str(tmp_path)), overrides={"http": 3})


@pytest.mark.parametrize(
    "text, message",
    [
        ("[http]\njitter = 1\n", "[http] jitter: expected true or false, got integer 1"),
        ('[http]\njitter = "yes"\n', '[http] jitter: expected true or false, got string "yes"'),
        ("[http]\nread_timeout = true\n", "[http] read_timeout: expected a number, got boolean true"),
        ("[http]\nread_timeout = 0\n", "[http] read_timeout: expected a finite number greater than 0, got integer 0"),
        ("[http]\nread_timeout = -1.5\n", "[http] read_timeout: expected a finite number greater than 0, got float -1.5"),
        ("[http]\nread_timeout = inf\n", "[http] read_timeout: expected a finite number greater than 0, got float inf"),
        ("[http]\nread_timeout = nan\n", "[http] read_timeout: expected a finite number greater than 0, got float nan"),
        ("[http]\nread_timeout = [1]\n", "[http] read_timeout: expected a number, got array"),
        ("[imds]\naddress = 169\n", "[imds] address: expected a string, got integer 169"),
        ('[provisioning]\nadmin_groups = "sudo"\n', '[provisioning] admin_groups: expected an array, got string "sudo"'),
        ('[provisioning]\nadmin_groups = ["sudo", 3]\n', "[provisioning] admin_groups: item 2: expected a string, got integer 3"),
        ('[provisioning]\nadmin_groups = ["sudo", ["wheel"]]\n', "[provisioning] admin_groups: item 2: expected a string, got array"),
        ('[provisioning]\nadmin_groups = ["my group"]\n', '[provisioning] admin_groups: invalid group name "my group" (empty, or has a space, \':\' or \',\')'),
        ("[imds]\naddress = \"https://x\"\n", '[imds] address: expected HOST, HOST:PORT or http://HOST[:PORT] (the fabric speaks plain http only), got "https://x"'),
        ("[wireserver]\ndeadline = 1979-05-27\n", "[wireserver] deadline: expected a number, got date"),
        ("[http.read_timeout]\nx = 1\n", "[http] read_timeout: expected a number, got table"),
        ("[wireserver]\n[wireserver.sub]\nx = 1\n", "[wireserver] sub: unknown key (keys of [wireserver]: address, deadline, root_only)"),
    ],
)
def test_wrong_types(tmp_path, text, message):
    path = write(tmp_path, CONFIG_FILE, text)
    with pytest.raises(ConfigError) as caught:
        load_config(Host(str(tmp_path)))
    assert str(caught.value) == f"{path}: {message}"


def test_huge_integer_is_refused_not_crashing(tmp_path):
    with pytest.raises(ConfigError, match="finite number"):
        load_config(Host(str(tmp_path)), overrides={"http": {"read_timeout": 10**400}})


def test_empty_admin_groups_allowed(tmp_path):
    write(tmp_path, CONFIG_FILE, "[provisioning]\nadmin_groups = []\n")
    assert load_config(Host(str(tmp_path))).provisioning.admin_groups == ()


def test_backoff_initial_above_max(tmp_path):
    write(tmp_path, CONFIG_FILE, "[http]\nbackoff_max = 0.2\n")
    with pytest.raises(ConfigError, match=r"backoff_initial \(0.5\) is larger than backoff_max \(0.2\)"):
        load_config(Host(str(tmp_path)))


def test_invalid_toml_names_file_and_parser_message(tmp_path):
    path = write(tmp_path, CONFIG_FILE, "[http]\nconnect_timeout = \n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: invalid TOML: ") + r".*line 2"):
        load_config(Host(str(tmp_path)))


def test_duplicate_key_is_invalid_toml(tmp_path):
    write(tmp_path, CONFIG_FILE, "[http]\njitter = true\njitter = false\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(Host(str(tmp_path)))


@pytest.mark.parametrize(
    "text",
    ["[http]\nread_timeout = " + "9" * 5000 + "\n", "[http]\nread_timeout = " + "[" * 100_000 + "\n"],
)
def test_hostile_toml_is_a_config_error(tmp_path, text):
    path = write(tmp_path, CONFIG_FILE, text)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: invalid TOML: ")):
        load_config(Host(str(tmp_path)))


def test_huge_integer_in_range_of_the_parser(tmp_path):
    write(tmp_path, CONFIG_FILE, "[http]\njitter = " + "9" * 4000 + "\n")
    with pytest.raises(ConfigError, match="expected true or false, got a very large integer$"):
        load_config(Host(str(tmp_path)))


def test_not_utf8(tmp_path):
    path = write(tmp_path, CONFIG_FILE, b"# \xff\xfe\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: not UTF-8 text")):
        load_config(Host(str(tmp_path)))


def test_oversized_file(tmp_path):
    path = write(tmp_path, CONFIG_FILE, "#" * (CONFIG_SIZE_LIMIT + 1))
    with pytest.raises(ConfigError, match=re.escape(f"{path}: configuration file is larger than 256 KiB")):
        load_config(Host(str(tmp_path)))
    path.write_text("#" * CONFIG_SIZE_LIMIT)
    assert load_config(Host(str(tmp_path))) == Config(sources=(str(path),))


def test_explicit_file_replaces_main_file(tmp_path):
    write(tmp_path, CONFIG_FILE, "[http]\njitter = false\n")
    dropin = write(tmp_path, f"{DROPIN_DIR}/a.toml", "[http]\nread_timeout = 7\n")
    other = write(tmp_path, "elsewhere.toml", "[http]\nconnect_timeout = 9\n")
    config = load_config(Host(str(tmp_path)), config_file=str(other))
    assert config.http.jitter is True
    assert config.http.connect_timeout == 9.0
    assert config.http.read_timeout == 7.0
    assert config.sources == (str(other), str(dropin))


def test_explicit_missing_file_is_an_error(tmp_path):
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=re.escape(f"{missing}: cannot read the configuration file: No such file")):
        load_config(Host(str(tmp_path)), config_file=str(missing))


def test_directory_as_config_file(tmp_path):
    (tmp_path / CONFIG_FILE).mkdir(parents=True)
    with pytest.raises(ConfigError, match="not a regular file|Is a directory"):
        load_config(Host(str(tmp_path)))


def test_render_toml_round_trips(tmp_path):
    write(tmp_path, CONFIG_FILE, '[wireserver]\ndeadline = 12.25\n[provisioning]\ncreate_user = false\n')
    config = load_config(
        Host(str(tmp_path)),
        overrides={
            "imds": {"address": "http://[::1]:8080"},
            "http": {"connect_timeout": 1e-05, "backoff_max": 1e20},
            "provisioning": {"admin_groups": ['we"ird\\grp', "adm"]},
        },
    )
    text = render_toml(config)
    assert str(tmp_path / CONFIG_FILE) in text.splitlines()[2]
    rendered = write(tmp_path, "rendered.toml", text)
    (tmp_path / "empty-root").mkdir()
    again = load_config(Host(str(tmp_path / "empty-root")), config_file=str(rendered))
    assert again.to_dict() == config.to_dict()


def test_render_toml_of_defaults_round_trips(tmp_path):
    text = render_toml(Config())
    assert "built-in defaults" in text
    assert "# address is not set: discover it" in text
    rendered = write(tmp_path, "rendered.toml", text)
    assert load_config(Host(str(tmp_path)), config_file=str(rendered)).to_dict() == Config().to_dict()


def test_to_dict_shape():
    data = Config(wireserver=WireServerConfig(address="10.0.0.1")).to_dict()
    assert list(data) == ["wireserver", "imds", "http", "health", "provisioning", "media", "custom_data", "temp_disk",
                          "deprovision"]
    assert data["wireserver"] == {"address": "10.0.0.1", "deadline": 1200.0, "root_only": True}
    assert data["provisioning"]["admin_groups"] == ("sudo", "wheel")
    assert "sources" not in data


def test_shipped_file_is_all_defaults(tmp_path):
    path = write(tmp_path, CONFIG_FILE, SHIPPED.read_text())
    assert load_config(Host(str(tmp_path))) == Config(sources=(str(path),))


def test_shipped_file_documents_every_key_with_its_default(tmp_path):
    text = SHIPPED.read_text()
    setting = re.compile(r"^# ?([a-z_]+ = .*)$", re.MULTILINE)
    uncommented = setting.sub(r"\1", text)
    assert uncommented != text
    write(tmp_path, CONFIG_FILE, uncommented)
    assert load_config(Host(str(tmp_path))).to_dict() == Config().to_dict()
    raw = tomllib.loads(uncommented)
    assert {section: set(keys) for section, keys in raw.items()} == {
        section: set(keys) for section, keys in Config().to_dict().items()
    }


# --------------------------------------------------------------------------------------------
# properties (hypothesis): strategies and conventions in support/strategies.py


SECTIONS = {
    "wireserver": WireServerConfig,
    "imds": ImdsConfig,
    "http": HttpConfig,
    "provisioning": ProvisioningConfig,
}


def toml_string(value: str, draw) -> str:
    """A TOML string for ``value``: basic with escapes, or literal when it can be."""
    if (draw(st.booleans()) and "'" not in value
            and all(c == "\t" or (ord(c) >= 0x20 and ord(c) != 0x7F) for c in value)):
        return f"'{value}'"
    out = []
    ascii_only = draw(st.booleans())
    for char in value:
        point = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif point < 0x20 or point == 0x7F or (ascii_only and point > 0x7E):
            out.append(f"\\u{point:04x}" if point <= 0xFFFF else f"\\U{point:08x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_value(value, draw) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return draw(st.sampled_from(["{}", "+{}"])).format(value) if value >= 0 else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value, draw)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item, draw) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v, draw)}" for k, v in value.items()) + "}"
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    raise TypeError(type(value))


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def order_for_toml(draw, sections: Dict[str, Dict[str, object]]) -> str:
    """TOML document with the non-table styles first, so every section stays at the top level."""
    tables, top = {}, {}
    for name, values in sections.items():
        (top if draw(st.booleans()) and values else tables)[name] = values
    text = ""
    for name, values in top.items():
        if draw(st.booleans()):
            text += "".join(f"{toml_key(name)}.{toml_key(k)} = {toml_value(v, draw)}\n"
                            for k, v in values.items())
        else:
            text += f"{toml_key(name)} = {toml_value(dict(values), draw)}\n"
    for name, values in tables.items():
        text += f"\n[{toml_key(name)}]\n"
        text += "".join(f"{toml_key(k)} = {toml_value(v, draw)}\n" for k, v in values.items())
        if draw(st.booleans()):
            text += draw(st.sampled_from(["# comment\n", "   # indented \t\n", "\n"]))
    return text


POSITIVE_NUMBERS = st.one_of(
    st.floats(min_value=0.0, exclude_min=True, allow_nan=False, allow_infinity=False),
    st.integers(1, 2**63 - 1),
    st.sampled_from([5e-324, 1e308, 0.1, 1, 30]),
)

GROUP_NAMES = st.text(
    alphabet=characters(exclude_categories=("Cs",)).filter(lambda c: not c.isspace() and c not in ":,"),
    min_size=1, max_size=12,
)


def valid_values(section: str, key: str):
    """Valid raw TOML values for one key."""
    hint = {f.name: f for f in dataclasses.fields(SECTIONS[section])}[key]
    if key == "address":
        return st.one_of(addresses(), st.just("")) if section == "wireserver" else addresses()
    if key == "admin_groups":
        return st.lists(GROUP_NAMES, max_size=4)
    if hint.type in ("bool", bool):
        return st.booleans()
    return POSITIVE_NUMBERS


KNOWN_KEYS = [(section, f.name) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def converted(section: str, key: str, value):
    """What the loader must make of a valid raw value."""
    if key == "address":  # parsed once, when read
        return parse_address(value) if value else None
    if key == "admin_groups":
        return tuple(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    return value


def write_raw(root: str, relative: str, data) -> None:
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data if isinstance(data, bytes) else utf8(data))


def check_config(root: str, **kwargs) -> Optional[Config]:
    try:
        config = load_config(Host(root), **kwargs)
    except ConfigError:
        return None
    assert isinstance(config, Config)
    for name, cls in SECTIONS.items():
        assert isinstance(getattr(config, name), cls)
    return config


# Raw TOML values of every type, awkward ones included.
TOML_SCALARS = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    ANY_TEXT.filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)),
    st.datetimes(timezones=st.none() | st.just(datetime.timezone.utc)),
    st.dates(),
    st.times(),
    st.sampled_from(["", "http://", "ftp://x", "https://168.63.129.16", "[::1]:0", "a:99999",
                     "168.63.129.16:80", "x" * 300, "-x", "host/"]),
)

TOML_VALUES = st.recursive(
    TOML_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), children, max_size=3),
    ),
    max_leaves=10,
)

TOML_KEYS = st.one_of(
    st.sampled_from(sorted({key for _, key in KNOWN_KEYS}) + ["adress", "jiter", "Address"]),
    st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True),
    st.text(max_size=8),
)

TOML_SECTIONS = st.one_of(
    st.sampled_from(list(SECTIONS) + ["sources", "http2", "HTTP", "imds.extra"]),
    st.from_regex(r"[a-z]{1,10}", fullmatch=True),
)


@st.composite
def toml_documents(draw) -> str:
    """Syntactically valid TOML, random sections/keys/values: mostly wrong for azprov."""
    sections = draw(st.dictionaries(
        TOML_SECTIONS,
        st.dictionaries(TOML_KEYS, st.one_of(TOML_VALUES, st.sampled_from(
            [True, 1, 1.5, "x", [], ["sudo"], 2**63 - 1, -1, 0, 0.0, "", "169.254.169.254"])),
            max_size=4),
        max_size=4,
    ))
    text = order_for_toml(draw, sections)
    if draw(st.integers(0, 3)) == 0:  # a key outside every section
        text = f"{draw(st.sampled_from(['jitter', 'address', 'x']))} = 1\n" + text
    return text


TOML_FRAGMENTS = [
    b"[http]\n", b"[[http]]\n", b"=", b"\"", b"'''", b"\\", b"\n", b"\r", b"\x00", b"\xff",
    b"1" * 5000, b"9e999", b"nan", b"inf", b"[" * 3000, b"{", b"a.b.c = 1\n", b"\xed\xa0\x80",
]


@fuzz(250)
@example("[http]\njitter = 1" + "0" * 5000 + "\n")
@example("a = " + "[" * 5000 + "]" * 5000)
@example("[http]\nconnect_timeout = 1e400\n")
@example("imds = 3\n")
@example("[http]\nbackoff_initial = 10\n")
@given(st.one_of(ANY_TEXT, toml_documents(), st.text(max_size=500)))
def test_config_any_toml_text(text):
    with tempfile.TemporaryDirectory() as root:
        write_raw(root, CONFIG_FILE, text)
        check_config(root)


@fuzz(150)
@given(st.one_of(
    st.binary(max_size=400),
    toml_documents().map(utf8).flatmap(lambda body: mutated(body, TOML_FRAGMENTS)),
), st.lists(st.tuples(
    st.text(alphabet=characters(exclude_categories=("Cs",)).filter(lambda c: c not in "/\x00"),
            min_size=1, max_size=10),
    st.binary(max_size=100),
), max_size=3))
def test_config_any_bytes_and_dropins(body, dropins):
    with tempfile.TemporaryDirectory() as root:
        write_raw(root, CONFIG_FILE, body)
        os.makedirs(os.path.join(root, DROPIN_DIR), exist_ok=True)
        for name, data in dropins:
            if name in (".", ".."):
                continue
            write_raw(root, os.path.join(DROPIN_DIR, name + ".toml"), data)
        check_config(root)


@st.composite
def layered_configs(draw):
    """Valid settings spread over the main file, drop-ins and command-line overrides."""
    layer_count = draw(st.integers(1, 4))  # 0 = main file, 1..n-1 = drop-ins
    layers: List[Dict[str, Dict[str, object]]] = [{} for _ in range(layer_count)]
    overrides: Dict[str, Dict[str, object]] = {}
    expected: Dict[str, Dict[str, object]] = {name: {} for name in SECTIONS}
    chosen = draw(st.lists(st.sampled_from(KNOWN_KEYS), max_size=12))
    for section, key in chosen:
        value = draw(valid_values(section, key))
        where = draw(st.integers(0, layer_count))  # layer_count = overrides
        if where == layer_count:
            overrides.setdefault(section, {})[key] = value
        else:
            layers[where].setdefault(section, {})[key] = value
    # later wins, key by key: main < drop-ins in lexical order < overrides
    for layer in layers + [overrides]:
        for section, values in layer.items():
            for key, value in values.items():
                expected[section][key] = converted(section, key, value)
    texts = [order_for_toml(draw, layer) for layer in layers]
    skipped = {name: [None] for name in draw(st.lists(st.sampled_from(list(SECTIONS)), max_size=2))}
    for section, keys in skipped.items():  # None overrides mean "not given"
        key = draw(st.sampled_from([f.name for f in dataclasses.fields(SECTIONS[section])]))
        if key not in overrides.get(section, {}):
            overrides.setdefault(section, {})[key] = None
    return texts, overrides, expected


def expected_config(expected: Dict[str, Dict[str, object]], sources) -> Config:
    return Config(**{name: cls(**expected[name]) for name, cls in SECTIONS.items()},
                  sources=tuple(sources))


@fuzz(200)
@given(layered_configs(), st.booleans())
def test_config_valid_layers_load_back(layers, use_dropin_dir_noise):
    texts, overrides, expected = layers
    with tempfile.TemporaryDirectory() as root:
        write_raw(root, CONFIG_FILE, texts[0])
        sources = [os.path.join(root, CONFIG_FILE)]
        for index, text in enumerate(texts[1:]):
            name = os.path.join(DROPIN_DIR, f"{index:02d}-layer.toml")
            write_raw(root, name, text)
            sources.append(os.path.join(root, name))
        if use_dropin_dir_noise:  # not *.toml: ignored
            write_raw(root, os.path.join(DROPIN_DIR, "README"), "not toml {")
            write_raw(root, os.path.join(DROPIN_DIR, "99-x.toml.dpkg-old"), "[nope]\n")
        note("\n----\n".join(texts))
        wanted = expected_config(expected, sources)
        if wanted.http.backoff_initial > wanted.http.backoff_max:
            with pytest.raises(ConfigError):
                load_config(Host(root), overrides=overrides)
        else:
            assert load_config(Host(root), overrides=overrides) == wanted


@st.composite
def valid_configs(draw, sources=st.just(())) -> Config:
    sections = {}
    for name, cls in SECTIONS.items():
        values = {}
        for f in dataclasses.fields(cls):
            if draw(st.booleans()):
                values[f.name] = converted(name, f.name, draw(valid_values(name, f.name)))
        sections[name] = cls(**values)
    config = Config(**sections, sources=draw(sources))
    assume(config.http.backoff_initial <= config.http.backoff_max)
    return config


def check_render_round_trip(config: Config) -> None:
    text = render_toml(config)
    with tempfile.TemporaryDirectory() as root:
        write_raw(root, CONFIG_FILE, text)
        loaded = load_config(Host(root))
    assert dataclasses.replace(loaded, sources=()) == dataclasses.replace(config, sources=())


PRINTABLE_PATHS = st.lists(
    st.text(alphabet=characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=40),
    max_size=3,
).map(tuple)


@fuzz(150)
@example(Config())
@example(Config(provisioning=ProvisioningConfig(admin_groups=('"\\\x00\x7f\U0001f600',))))
@given(valid_configs(sources=PRINTABLE_PATHS))
def test_config_render_toml_reloads_equal(config):
    check_render_round_trip(config)


@fuzz(50)
@example(Config(sources=("/etc/azprov/azprov.toml.d/x\n[http]\njitter = false # .toml",)))
@given(valid_configs(sources=st.lists(ANY_TEXT.filter(
    lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)), max_size=3).map(tuple)))
def test_config_render_toml_reloads_equal_with_any_source_path(config):
    check_render_round_trip(config)

def test_health_protocol_is_xml_by_default_and_json_on_request(tmp_path):
    from azprov.config import load_config

    assert load_config(Host(str(tmp_path))).health.protocol == "xml"
    assert load_config(Host(str(tmp_path)), overrides={"health": {"protocol": "json"}}).health.protocol == "json"
    with pytest.raises(ConfigError, match=r'\[health\] protocol: expected one of "xml", "json"'):
        load_config(Host(str(tmp_path)), overrides={"health": {"protocol": "soap"}})

def test_custom_data_on_missing_is_fail_or_warn(tmp_path):
    write(tmp_path, CONFIG_FILE, '[custom_data]\non_missing = "warn"\nrun = true\n[media]\neject = false\n')
    loaded = load_config(Host(str(tmp_path)))
    assert (loaded.custom_data.on_missing, loaded.custom_data.run, loaded.media.eject) == ("warn", True, False)
    write(tmp_path, CONFIG_FILE, '[custom_data]\non_missing = "ignore"\n')
    with pytest.raises(ConfigError, match='expected "fail" or "warn"'):
        load_config(Host(str(tmp_path)))
