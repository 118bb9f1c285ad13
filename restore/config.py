"""Defaults for every option: a TOML file, named profiles and ``MAILRESTORE_*`` variables.

``$XDG_CONFIG_HOME/mailrestore/config.toml`` (or ``--config FILE``, or
``MAILRESTORE_CONFIG``)::

    catalog = "/srv/mailrestore/catalog.sqlite"     # every command that has --catalog

    [inject]                                         # inject only
    jobs = 8

    [profile.incident]                               # chosen with --profile incident
    archive = ["eml:/srv/gateway"]
    replica = "maildir:/var/vmail/%d/%n/Maildir"
    alias-map = "/etc/mailrestore/aliases"

    [profile.incident.restore]
    to = "maildir:/var/vmail/%d/%n/Maildir"

A key is an option's long name (``alias-map``; ``alias_map`` too). Each
option's value comes from the first of: the command line, ``MAILRESTORE_NAME``
(``MAILRESTORE_ALIAS_MAP``; several values of a repeatable option separated
by spaces, shell-quoted), the profile's table for the command, the
profile, the file's table for the command, the file's top level, and the
built-in default. ``MAILRESTORE_PASSWORD`` keeps its meaning (the IMAP
password); a ``password`` key is refused: a file of defaults gets copied
and shown around, so it names a password file (``password-file``) instead.

This module knows nothing of click: the CLI hands it the settings each
command takes (``Known``) and turns the result into click's ``default_map``.
"""

from __future__ import annotations

import os
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from restore.errors import UsageError

ENV_PREFIX = "MAILRESTORE_"
CONFIG_ENV = "MAILRESTORE_CONFIG"
PROFILE_ENV = "MAILRESTORE_PROFILE"
SECRETS = ("password",)
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


class ConfigError(UsageError):
    """The configuration file or a MAILRESTORE_* variable is unusable (exit 2)."""


@dataclass(frozen=True)
class Kind:
    """What an option takes, as far as reading its default goes."""

    multiple: bool = False      # repeatable: a list
    flag: bool = False          # on or off: a boolean
    path: bool = False          # a file name: ``~`` is expanded


# command -> setting name (the option's long name) -> its kind
Known = Mapping[str, Mapping[str, Kind]]


@dataclass(frozen=True)
class Setting:
    value: object
    source: str                 # where it came from, for ``mailrestore config``


@dataclass
class Config:
    path: Path
    found: bool                              # False: the default file does not exist
    profile: str | None
    settings: dict[str, dict[str, Setting]] = field(default_factory=dict)   # command -> name ->

    def for_command(self, command: str) -> dict[str, Setting]:
        return self.settings.get(command, {})


def default_path() -> Path:
    from platformdirs import user_config_path

    return user_config_path("mailrestore") / "config.toml"


def env_name(setting: str) -> str:
    """``alias-map`` -> ``MAILRESTORE_ALIAS_MAP``."""
    return ENV_PREFIX + setting.upper().replace("-", "_")


def load(known: Known, path: str | None = None, profile: str | None = None,
         environ: Mapping[str, str] | None = None) -> Config:
    """Read the file (``path``, else the default, which may be absent) and the environment."""
    environ = os.environ if environ is None else environ
    where = Path(path).expanduser() if path is not None else default_path()
    doc: dict = {}
    try:
        found = where.is_file()
    except OSError as exc:      # a directory on the way that may not be searched
        raise ConfigError(f"{where}: {exc.strerror or exc}") from None
    if found:
        doc = _parse(where)
    elif path is not None:
        raise ConfigError(f"{where}: no such configuration file")
    if profile is not None and not found:
        raise ConfigError(f"--profile {profile}: there is no configuration file ({where})")

    names = {name for settings in known.values() for name in settings}
    top, tables, profiles = _split(doc, known, names, where, "")
    layers: list[tuple[str, dict, dict]] = [(f"{where.name}", top, tables)]
    # Every profile is checked, not only the one in use: a mistake shows the first time.
    checked = {name: _split(body, known, names, where, f"profile.{name}.")
               for name, body in profiles.items()}
    if profile is not None:
        if profile not in profiles:
            have = ", ".join(sorted(profiles)) or "none"
            raise ConfigError(f"{where}: no [profile.{profile}] (profiles: {have})")
        p_top, p_tables, _ = checked[profile]
        layers.append((f"profile {profile}", p_top, p_tables))

    config = Config(where, found, profile)
    for command, settings in known.items():
        merged: dict[str, Setting] = {}
        for label, top_values, command_tables in layers:
            for name, value in top_values.items():
                if name in settings:
                    merged[name] = Setting(_value(value, settings[name], where, name), label)
            for name, value in command_tables.get(command, {}).items():
                merged[name] = Setting(_value(value, settings[name], where, name),
                                       f"{label} [{command}]")
        for name, kind in settings.items():
            variable = env_name(name)
            if variable in environ:
                merged[name] = Setting(_env_value(environ[variable], kind, variable), variable)
        config.settings[command] = merged
    return config


def _parse(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None


def _split(table: dict, known: Known, names: set[str], where: Path,
           prefix: str) -> tuple[dict, dict[str, dict], dict[str, dict]]:
    """A table's option values, its per-command tables and its profiles, each key checked."""
    top: dict = {}
    commands: dict[str, dict] = {}
    profiles: dict[str, dict] = {}
    for key, value in table.items():
        name = key.replace("_", "-")
        if name in known and isinstance(value, dict):
            commands[name] = {}
            for sub, sub_value in value.items():
                sub_name = sub.replace("_", "-")
                _refuse_secret(sub_name, where, f"{prefix}{name}.")
                if sub_name not in known[name]:
                    raise ConfigError(f"{where}: [{prefix}{name}] {sub}: {name} has no option "
                                      f"--{sub_name}")
                commands[name][sub_name] = sub_value
        elif name == "profile" and isinstance(value, dict) and not prefix:
            for profile, body in value.items():
                if not isinstance(body, dict):
                    raise ConfigError(f"{where}: profile.{profile} must be a table")
                profiles[profile] = body
        else:
            _refuse_secret(name, where, prefix)
            if name not in names:
                raise ConfigError(f"{where}: {prefix}{key}: no command has an option --{name}")
            top[name] = value
    return top, commands, profiles


def _refuse_secret(name: str, where: Path, prefix: str) -> None:
    if name in SECRETS:
        raise ConfigError(f"{where}: {prefix}{name}: no passwords in a configuration file; "
                          "give password-file = PATH (a file only you can read), or set "
                          "MAILRESTORE_PASSWORD")


def _value(value: object, kind: Kind, where: Path, name: str) -> object:
    """A TOML value as the option takes it; ConfigError naming the key otherwise."""
    if kind.flag:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {name} = {value!r}: expected true or false")
        return value
    if kind.multiple:
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"{where}: {name}: expected a string or a list of strings")
        return [_path(v, kind) if isinstance(v, str) else v for v in values]
    if isinstance(value, dict | list) or isinstance(value, bool):
        raise ConfigError(f"{where}: {name} = {value!r}: expected one value")
    return _path(value, kind) if isinstance(value, str) else value


def _env_value(text: str, kind: Kind, variable: str) -> object:
    if kind.flag:
        lowered = text.strip().lower()
        if lowered not in TRUE + FALSE:
            raise ConfigError(f"{variable}={text!r}: expected 1 or 0 (true, false, yes, no)")
        return lowered in TRUE
    if kind.multiple:
        try:
            return shlex.split(text)
        except ValueError as exc:
            raise ConfigError(f"{variable}: {exc}") from None
    return text


def _path(value: str, kind: Kind) -> str:
    return os.path.expanduser(value) if kind.path else value
