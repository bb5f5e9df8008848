"""Where Server connects and with which token: address forms, environment, the client config
file, and the refusal to send a token in clear to another machine."""

import pytest

from scitq.errors import ConfigError, ScitqError
from scitq.lib import Server
from scitq._target import parse_address


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    for name in ("SCITQ_SERVER", "SCITQ_TOKEN", "SCITQ_INSECURE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return tmp_path


def write_config(home, text):
    path = home / ".config" / "scitq" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, shown, loopback", [
    ("example.org", "example.org:5000", False),
    ("127.0.0.1:6000", "127.0.0.1:6000", True),
    ("http://10.0.0.1:7000", "10.0.0.1:7000", False),
    ("http://localhost", "localhost:5000", True),
    ("https://scitq.example.org:443/", "https://scitq.example.org:443", False),
    ("[::1]:5001", "[::1]:5001", True),
    ("::1", "[::1]:5000", True),
])
def test_address_forms(text, shown, loopback):
    address = parse_address(text)
    assert str(address) == shown
    assert address.is_loopback() == loopback


@pytest.mark.parametrize("text, reason", [
    ("foo:bar:baz", "too many colons"),
    ("http://", "missing host"),
    ("127.0.0.1:99999", "port 99999 is out of range (1-65535)"),
    ("host:abc", "port abc is not a number"),
    ("ftp://host", "unknown scheme ftp"),
    ("host/path", "a server address has no path"),
    ("bad host", "invalid character ' ' in host bad host"),
    ("[::1", "unclosed ["),
])
def test_bad_addresses_are_named(text, reason, no_env):
    with pytest.raises(ConfigError) as caught:
        Server(text, token="t")
    assert str(caught.value).startswith(f"invalid server address {text!r}: ")
    assert reason in str(caught.value)
    assert caught.value.code is None


def test_arguments_win_over_env_which_wins_over_the_config_file(no_env, monkeypatch):
    write_config(no_env, 'server = "127.0.0.1:7001"\ntoken = "from-file"\n')
    s = Server()
    assert (str(s.target.address), s.target.token) == ("127.0.0.1:7001", "from-file")
    monkeypatch.setenv("SCITQ_SERVER", "localhost:7002")
    monkeypatch.setenv("SCITQ_TOKEN", "from-env")
    s = Server()
    assert (str(s.target.address), s.target.token) == ("localhost:7002", "from-env")
    s = Server("127.0.0.2", token="from-arg")
    assert (str(s.target.address), s.target.token) == ("127.0.0.2:5000", "from-arg")


def test_xdg_config_home_is_where_the_file_is(no_env, monkeypatch, tmp_path):
    xdg = tmp_path / "xdg"
    (xdg / "scitq").mkdir(parents=True)
    (xdg / "scitq" / "config.toml").write_text('token = "xdg"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    s = Server()
    assert (str(s.target.address), s.target.token) == ("127.0.0.1:5000", "xdg")


def test_missing_token_and_bad_config_are_explained(no_env):
    with pytest.raises(ConfigError, match="no token: pass token=, set SCITQ_TOKEN"):
        Server("127.0.0.1")
    path = write_config(no_env, "server = \n")
    with pytest.raises(ConfigError, match=f"invalid client config {path}"):
        Server()


def test_a_token_never_goes_in_clear_to_another_machine(no_env, monkeypatch):
    with pytest.raises(ConfigError) as caught:
        Server("10.1.2.3", token="secret")
    assert str(caught.value).startswith(
        "refusing to send the token in clear to http://10.1.2.3:5000: use https://10.1.2.3:5000")
    assert "secret" not in str(caught.value)
    Server("10.1.2.3", token="secret", insecure=True)
    Server("https://10.1.2.3", token="secret")
    monkeypatch.setenv("SCITQ_INSECURE", "1")
    Server("10.1.2.3", token="secret")


def test_style_must_be_dict_or_object(no_env):
    with pytest.raises(ScitqError, match="invalid style 'json'"):
        Server("127.0.0.1", token="t", style="json")
