"""Where the client connects and with which token, resolved as scitqctl does.

Address and token come from the arguments, else `SCITQ_SERVER` / `SCITQ_TOKEN`, else the
client config `scitqd` writes on its first start (`$XDG_CONFIG_HOME/scitq/config.toml`,
default `~/.config/scitq/config.toml`). Addresses are `HOST`, `HOST:PORT`, `http://HOST:PORT`
or `https://HOST:PORT` (IPv6 in brackets); a missing port is 5000. A token is never sent in
clear (plain http) to a host other than this machine unless `insecure` (or `SCITQ_INSECURE`).
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DEFAULT_PORT = 5000
DEFAULT_SERVER = "127.0.0.1:5000"
_HOST_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")


@dataclass(frozen=True)
class Address:
    tls: bool
    #: Host name or IP address; IPv6 addresses keep their brackets.
    host: str
    port: int

    @property
    def target(self) -> str:
        """`HOST:PORT`, as grpc connects to it."""
        return f"{self.host}:{self.port}"

    @property
    def host_name(self) -> str:
        return self.host.strip("[]")

    def is_loopback(self) -> bool:
        name = self.host_name
        if name.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"https://{self.target}" if self.tls else self.target


def parse_address(text: str) -> Address:
    """Parses an address as users write it; errors name the input and what is wrong."""

    def bad(reason: str) -> ConfigError:
        return ConfigError(f"invalid server address {text!r}: {reason}")

    trimmed = text.strip()
    if not trimmed:
        raise bad("empty address")
    tls = False
    rest = trimmed
    if "://" in trimmed:
        scheme, rest = trimmed.split("://", 1)
        if scheme not in ("http", "https"):
            raise bad(f"unknown scheme {scheme} (use http or https)")
        tls = scheme == "https"
    rest = rest[:-1] if rest.endswith("/") else rest
    if "/" in rest:
        raise bad("a server address has no path")
    if not rest:
        raise bad("missing host")
    host, port = _split_host_port(rest, bad)
    return Address(tls=tls, host=host, port=DEFAULT_PORT if port is None else _port(port, bad))


def _split_host_port(rest: str, bad) -> tuple[str, Optional[str]]:
    if rest.startswith("["):
        ip, sep, after = rest[1:].partition("]")
        if not sep:
            raise bad("unclosed [ in IPv6 address")
        try:
            ipaddress.IPv6Address(ip)
        except ValueError:
            raise bad(f"{ip} is not an IPv6 address") from None
        if after and not after.startswith(":"):
            raise bad(f"unexpected {after!r} after the IPv6 address")
        return f"[{ip}]", (after[1:] if after else None)
    try:
        ipaddress.IPv6Address(rest)
        return f"[{rest}]", None
    except ValueError:
        pass
    host, sep, port = rest.partition(":")
    if sep and ":" in port:
        raise bad("too many colons (write IPv6 addresses in brackets: [::1]:5000)")
    if not host:
        raise bad("missing host")
    invalid = [c for c in host if c not in _HOST_CHARS]
    if invalid:
        raise bad(f"invalid character {invalid[0]!r} in host {host}")
    return host, (port if sep else None)


def _port(port: str, bad) -> int:
    if not port:
        raise bad("missing port after ':'")
    if not port.isdigit():
        raise bad(f"port {port} is not a number")
    value = int(port)
    if value == 0:
        raise bad("port 0 is not a port one can connect to")
    if value > 65535:
        raise bad(f"port {port} is out of range (1-65535)")
    return value


def config_path() -> Optional[Path]:
    """`$XDG_CONFIG_HOME/scitq/config.toml`, else `$HOME/.config/scitq/config.toml`."""
    xdg = os.environ.get("XDG_CONFIG_HOME")
    if xdg:
        return Path(xdg) / "scitq" / "config.toml"
    home = os.environ.get("HOME")
    if not home:
        return None
    return Path(home) / ".config" / "scitq" / "config.toml"


def load_config(path: Path) -> dict:
    """The client config; a missing file is an empty config."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError(f"cannot read client config {path}: {e.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid client config {path}: {e}") from None


@dataclass(frozen=True)
class Target:
    address: Address
    token: str


def resolve(
    server: Optional[str], token: Optional[str], insecure: Optional[bool] = None
) -> Target:
    """Combines arguments, environment and config file, and checks the result."""
    server = server or os.environ.get("SCITQ_SERVER") or None
    token = token or os.environ.get("SCITQ_TOKEN") or None
    path = config_path()
    file: dict = {}
    if (server is None or token is None) and path is not None:
        file = load_config(path)
    server = server or file.get("server") or DEFAULT_SERVER
    address = parse_address(str(server))
    token = (token or file.get("token") or "").strip()
    if not token:
        shown = path if path is not None else "$HOME/.config/scitq/config.toml"
        raise ConfigError(
            f"no token: pass token=, set SCITQ_TOKEN, or put `token = \"...\"` in {shown}; "
            f"scitqd writes its admin token to DATA_DIR/admin.token and that file on its first start"
        )
    if insecure is None:
        insecure = os.environ.get("SCITQ_INSECURE", "").lower() in ("1", "true", "yes", "on", "y")
    if not (address.tls or address.is_loopback() or insecure):
        raise ConfigError(
            f"refusing to send the token in clear to http://{address}: use https://{address} "
            f"(scitqd with TLS), or pass insecure=True (or set SCITQ_INSECURE=1) to send it anyway"
        )
    return Target(address=address, token=token)
