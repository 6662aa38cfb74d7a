import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:
    import tomli as tomllib

from azprov.config import (
    CONFIG_FILE,
    CONFIG_SIZE_LIMIT,
    DROPIN_DIR,
    Config,
    HttpConfig,
    ProvisioningConfig,
    WireServerConfig,
    load_config,
    render_toml,
)
from azprov.errors import ConfigError, ExitCode

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
    config = load_config(str(tmp_path))
    assert config == Config()
    assert config.sources == ()
    assert config.wireserver.address is None
    assert config.wireserver.deadline == 1200.0
    assert config.imds.address == "169.254.169.254"
    assert config.http == HttpConfig(3.0, 30.0, 60.0, 0.5, 3.0, True)
    assert config.provisioning.admin_groups == ("sudo", "wheel")


def test_file_and_dropins_in_lexical_order(tmp_path):
    main = write(tmp_path, CONFIG_FILE, '[http]\nconnect_timeout = 5\nread_timeout = 10.5\n[imds]\ndeadline = 100\n')
    second = write(tmp_path, f"{DROPIN_DIR}/20-second.toml", "[http]\nread_timeout = 20\n")
    first = write(tmp_path, f"{DROPIN_DIR}/10-first.toml", "[http]\nread_timeout = 15\njitter = false\n")
    write(tmp_path, f"{DROPIN_DIR}/30-ignored.conf", "not toml at all [")
    config = load_config(str(tmp_path))
    assert config.http.connect_timeout == 5.0 and isinstance(config.http.connect_timeout, float)
    assert config.http.read_timeout == 20.0
    assert config.http.jitter is False
    assert config.imds.deadline == 100.0
    assert config.http.attempt_timeout == 60.0  # untouched default
    assert config.sources == (str(main), str(first), str(second))


def test_dropins_without_main_file(tmp_path):
    dropin = write(tmp_path, f"{DROPIN_DIR}/50.toml", '[wireserver]\naddress = "10.0.0.9"\n')
    config = load_config(str(tmp_path))
    assert config.wireserver.address == "10.0.0.9"
    assert config.sources == (str(dropin),)


def test_overrides_win_and_none_means_not_given(tmp_path):
    write(tmp_path, CONFIG_FILE, '[wireserver]\naddress = "10.0.0.9"\n[imds]\naddress = "10.0.0.8"\n')
    config = load_config(
        str(tmp_path),
        overrides={"wireserver": {"address": "127.0.0.1:8080"}, "imds": {"address": None}},
    )
    assert config.wireserver.address == "127.0.0.1:8080"
    assert config.imds.address == "10.0.0.8"


def test_empty_address_means_discover(tmp_path):
    write(tmp_path, CONFIG_FILE, '[wireserver]\naddress = "10.0.0.9"\n')
    write(tmp_path, f"{DROPIN_DIR}/a.toml", '[wireserver]\naddress = ""\n')
    assert load_config(str(tmp_path)).wireserver.address is None


@pytest.mark.parametrize("address", ["168.63.129.16", "127.0.0.1:8080", "http://localhost:8080", "http://[::1]:80/", "wire.example"])
def test_address_forms_accepted(tmp_path, address):
    assert load_config(str(tmp_path), overrides={"imds": {"address": address}}).imds.address == address


@pytest.mark.parametrize("address", ["https://168.63.129.16", "http://x/machine", "a b", "x:0", "x:70000", "-x", "::1"])
def test_address_forms_refused(tmp_path, address):
    with pytest.raises(ConfigError, match=r"^command line: \[imds\] address: expected HOST"):
        load_config(str(tmp_path), overrides={"imds": {"address": address}})


def test_overrides_are_validated(tmp_path):
    with pytest.raises(ConfigError, match=r"^command line: \[http\] connect_timeout: expected a number, got string \"3\"$"):
        load_config(str(tmp_path), overrides={"http": {"connect_timeout": "3"}})
    with pytest.raises(ConfigError, match=r"^command line: unknown section \[htp\] \(did you mean 'http'\?\)"):
        load_config(str(tmp_path), overrides={"htp": {"connect_timeout": 3}})


def test_error_example_from_the_documentation(tmp_path):
    path = write(tmp_path, CONFIG_FILE, '[http]\nconnect_timeout = "x"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path))
    assert str(caught.value) == f'{path}: [http] connect_timeout: expected a number, got string "x"'
    assert caught.value.exit_code == ExitCode.CONFIG
    assert caught.value.details == {"source": str(path), "key": "http.connect_timeout"}


def test_unknown_section(tmp_path):
    path = write(tmp_path, CONFIG_FILE, "[provisionning]\nset_hostname = false\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: unknown section [provisionning] (did you mean 'provisioning'?)")):
        load_config(str(tmp_path))


def test_unknown_key_in_dropin_names_the_dropin(tmp_path):
    write(tmp_path, CONFIG_FILE, "[http]\nconnect_timeout = 2\n")
    path = write(tmp_path, f"{DROPIN_DIR}/10.toml", "[http]\nconect_timeout = 2\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: [http] conect_timeout: unknown key (did you mean 'connect_timeout'?)")):
        load_config(str(tmp_path))


def test_key_outside_any_section(tmp_path):
    write(tmp_path, CONFIG_FILE, "deadline = 3\n")
    with pytest.raises(ConfigError, match=r"deadline: every setting belongs in a section \(\[wireserver\]"):
        load_config(str(tmp_path))


def test_section_that_is_not_a_table(tmp_path):
    with pytest.raises(ConfigError, match=r"\[http\]: expected a table of settings, got integer 3"):
        load_config(str(tmp_path), overrides={"http": 3})


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
        ("[imds]\naddress = \"https://x\"\n", '[imds] address: expected HOST, HOST:PORT or http://HOST[:PORT] (the fabric speaks plain http only), got string "https://x"'),
        ("[wireserver]\ndeadline = 1979-05-27\n", "[wireserver] deadline: expected a number, got date"),
        ("[http.read_timeout]\nx = 1\n", "[http] read_timeout: expected a number, got table"),
        ("[wireserver]\n[wireserver.sub]\nx = 1\n", "[wireserver] sub: unknown key (keys of [wireserver]: address, deadline)"),
    ],
)
def test_wrong_types(tmp_path, text, message):
    path = write(tmp_path, CONFIG_FILE, text)
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path))
    assert str(caught.value) == f"{path}: {message}"


def test_huge_integer_is_refused_not_crashing(tmp_path):
    with pytest.raises(ConfigError, match="finite number"):
        load_config(str(tmp_path), overrides={"http": {"read_timeout": 10**400}})


def test_empty_admin_groups_allowed(tmp_path):
    write(tmp_path, CONFIG_FILE, "[provisioning]\nadmin_groups = []\n")
    assert load_config(str(tmp_path)).provisioning.admin_groups == ()


def test_backoff_initial_above_max(tmp_path):
    write(tmp_path, CONFIG_FILE, "[http]\nbackoff_max = 0.2\n")
    with pytest.raises(ConfigError, match=r"backoff_initial \(0.5\) is larger than backoff_max \(0.2\)"):
        load_config(str(tmp_path))


def test_invalid_toml_names_file_and_parser_message(tmp_path):
    path = write(tmp_path, CONFIG_FILE, "[http]\nconnect_timeout = \n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: invalid TOML: ") + r".*line 2"):
        load_config(str(tmp_path))


def test_duplicate_key_is_invalid_toml(tmp_path):
    write(tmp_path, CONFIG_FILE, "[http]\njitter = true\njitter = false\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(str(tmp_path))


@pytest.mark.parametrize(
    "text",
    ["[http]\nread_timeout = " + "9" * 5000 + "\n", "[http]\nread_timeout = " + "[" * 100_000 + "\n"],
)
def test_hostile_toml_is_a_config_error(tmp_path, text):
    path = write(tmp_path, CONFIG_FILE, text)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: invalid TOML: ")):
        load_config(str(tmp_path))


def test_huge_integer_in_range_of_the_parser(tmp_path):
    write(tmp_path, CONFIG_FILE, "[http]\njitter = " + "9" * 4000 + "\n")
    with pytest.raises(ConfigError, match="expected true or false, got a very large integer$"):
        load_config(str(tmp_path))


def test_not_utf8(tmp_path):
    path = write(tmp_path, CONFIG_FILE, b"# \xff\xfe\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: not UTF-8 text")):
        load_config(str(tmp_path))


def test_oversized_file(tmp_path):
    path = write(tmp_path, CONFIG_FILE, "#" * (CONFIG_SIZE_LIMIT + 1))
    with pytest.raises(ConfigError, match=re.escape(f"{path}: configuration file is larger than 256 KiB")):
        load_config(str(tmp_path))
    path.write_text("#" * CONFIG_SIZE_LIMIT)
    assert load_config(str(tmp_path)) == Config(sources=(str(path),))


def test_explicit_file_replaces_main_file(tmp_path):
    write(tmp_path, CONFIG_FILE, "[http]\njitter = false\n")
    dropin = write(tmp_path, f"{DROPIN_DIR}/a.toml", "[http]\nread_timeout = 7\n")
    other = write(tmp_path, "elsewhere.toml", "[http]\nconnect_timeout = 9\n")
    config = load_config(str(tmp_path), config_file=str(other))
    assert config.http.jitter is True
    assert config.http.connect_timeout == 9.0
    assert config.http.read_timeout == 7.0
    assert config.sources == (str(other), str(dropin))


def test_explicit_missing_file_is_an_error(tmp_path):
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=re.escape(f"{missing}: cannot read the configuration file: No such file")):
        load_config(str(tmp_path), config_file=str(missing))


def test_directory_as_config_file(tmp_path):
    (tmp_path / CONFIG_FILE).mkdir(parents=True)
    with pytest.raises(ConfigError, match="not a regular file|Is a directory"):
        load_config(str(tmp_path))


def test_render_toml_round_trips(tmp_path):
    write(tmp_path, CONFIG_FILE, '[wireserver]\ndeadline = 12.25\n[provisioning]\ncreate_user = false\n')
    config = load_config(
        str(tmp_path),
        overrides={
            "imds": {"address": "http://[::1]:8080"},
            "http": {"connect_timeout": 1e-05, "backoff_max": 1e20},
            "provisioning": {"admin_groups": ['we"ird\\grp', "adm"]},
        },
    )
    text = render_toml(config)
    assert str(tmp_path / CONFIG_FILE) in text.splitlines()[2]
    rendered = write(tmp_path, "rendered.toml", text)
    again = load_config(str(tmp_path / "empty-root"), config_file=str(rendered))
    assert again.to_dict() == config.to_dict()


def test_render_toml_of_defaults_round_trips(tmp_path):
    text = render_toml(Config())
    assert "built-in defaults" in text
    assert "# address is not set: discover it" in text
    rendered = write(tmp_path, "rendered.toml", text)
    assert load_config(str(tmp_path), config_file=str(rendered)).to_dict() == Config().to_dict()


def test_to_dict_shape():
    data = Config(wireserver=WireServerConfig(address="10.0.0.1")).to_dict()
    assert list(data) == ["wireserver", "imds", "http", "provisioning"]
    assert data["wireserver"] == {"address": "10.0.0.1", "deadline": 1200.0}
    assert data["provisioning"]["admin_groups"] == ("sudo", "wheel")
    assert "sources" not in data


def test_shipped_file_is_all_defaults(tmp_path):
    path = write(tmp_path, CONFIG_FILE, SHIPPED.read_text())
    assert load_config(str(tmp_path)) == Config(sources=(str(path),))


def test_shipped_file_documents_every_key_with_its_default(tmp_path):
    text = SHIPPED.read_text()
    setting = re.compile(r"^# ?([a-z_]+ = .*)$", re.MULTILINE)
    uncommented = setting.sub(r"\1", text)
    assert uncommented != text
    write(tmp_path, CONFIG_FILE, uncommented)
    assert load_config(str(tmp_path)).to_dict() == Config().to_dict()
    raw = tomllib.loads(uncommented)
    assert {section: set(keys) for section, keys in raw.items()} == {
        section: set(keys) for section, keys in Config().to_dict().items()
    }
