"""Defaults from a configuration file, a profile and MAILRESTORE_* variables.

Precedence: command line > environment > profile > config file > built-in.
"""

from __future__ import annotations

import json
from pathlib import Path

from test_restore_e2e import cli_env, mailrestore

from restore.demo import build_incident


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def settings(env: dict[str, str], *args: str) -> dict[tuple[str, str], tuple[object, str]]:
    """``mailrestore config --json`` as (setting, command) -> (value, source)."""
    done = mailrestore(env, "config", "--json", *args)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    return {(row["setting"], command): (row["value"], row["source"])
            for row in doc["settings"] for command in row["commands"]}


def test_a_profile_supplies_options_and_the_command_line_overrides_it(tmp_path):
    incident = build_incident(tmp_path / "incident")
    config = write_config(tmp_path, f"""
[profile.incident]
archive = ["{incident.archives[0]}"]
replica = "{incident.replica}"
alias-map = "{incident.alias_map}"
catalog = "{tmp_path / 'catalog.sqlite'}"
user = ["alice@example.com"]
""")
    env = cli_env(tmp_path)
    by_hand = mailrestore(env, "diff", "--archive", incident.archives[0], "--replica",
                          incident.replica, "--alias-map", str(incident.alias_map),
                          "--user", "alice@example.com", "--json")

    profiled = mailrestore(env, "diff", "--config", str(config), "--profile", "incident", "--json")
    assert profiled.returncode == by_hand.returncode == 1, profiled.stderr
    assert json.loads(profiled.stdout) == json.loads(by_hand.stdout)

    overridden = mailrestore(env, "diff", "--config", str(config), "--profile", "incident",
                             "--user", "bob@example.com", "--json")
    assert [u["user"] for u in json.loads(overridden.stdout)["users"]] == ["bob@example.com"]
    # the variables choose the file and profile as well
    chosen = mailrestore({**env, "MAILRESTORE_CONFIG": str(config),
                          "MAILRESTORE_PROFILE": "incident"}, "diff", "--json")
    assert json.loads(chosen.stdout) == json.loads(by_hand.stdout)


def test_each_layer_wins_over_the_one_below(tmp_path):
    config = write_config(tmp_path, """
jobs = 2
catalog = "~/from-top.sqlite"
match = "strict"
[inject]
jobs = 3
[profile.night]
jobs = 5
[profile.night.restore]
jobs = 6
""")
    env = {**cli_env(tmp_path), "MAILRESTORE_MATCH": "message-id", "HOME": str(tmp_path)}
    plain = settings(env, "--config", str(config))
    assert plain["jobs", "inject"] == (3, "config.toml [inject]")
    assert plain["jobs", "restore"] == (2, "config.toml")
    assert plain["catalog", "diff"] == (f"{tmp_path}/from-top.sqlite", "config.toml")
    assert plain["match", "diff"] == ("message-id", "MAILRESTORE_MATCH")
    assert plain["folder", "inject"] == (None, "built-in")
    night = settings(env, "--config", str(config), "--profile", "night")
    assert night["jobs", "inject"] == (5, "profile night")
    assert night["jobs", "restore"] == (6, "profile night [restore]")
    assert settings({**env, "MAILRESTORE_JOBS": "7"}, "--config", str(config),
                    "--profile", "night")["jobs", "restore"] == ("7", "MAILRESTORE_JOBS")


def test_the_default_file_lives_in_the_xdg_config_directory(tmp_path):
    env = cli_env(tmp_path)
    home = Path(env["XDG_CONFIG_HOME"]) / "mailrestore"
    home.mkdir(parents=True)
    (home / "config.toml").write_text("[diff]\nsince = \"2017-12-08T16:00:00Z\"\n")
    doc = json.loads(mailrestore(env, "config", "--json").stdout)
    assert doc["config"] == {"file": str(home / "config.toml"), "found": True}
    assert settings(env)["since", "diff"] == ("2017-12-08T16:00:00Z", "config.toml [diff]")


def test_a_bad_configuration_is_one_line_and_exit_2(tmp_path):
    env = cli_env(tmp_path)
    cases = {
        'jobs = \n': "not valid TOML",
        'password = "hunter2"\n': "no passwords in a configuration file",
        '[profile.x.inject]\npassword = "hunter2"\n': "no passwords in a configuration file",
        'archve = "eml:/srv"\n': "archve: no command has an option --archve",
        '[diff]\njobs = 3\n': "[diff] jobs: diff has no option --jobs",
        'dry-run = "yes"\n': "expected true or false",
        '[inject]\njobs = "many"\n': "(config.toml [inject]): jobs = 'many': 'many' is not",
    }
    for text, reason in cases.items():
        config = write_config(tmp_path, text)
        done = mailrestore(env, "inject", "plan.jsonl", "--to", "maildir:/nowhere/%u",
                           "--config", str(config))
        assert done.returncode == 2, (text, done.stderr)
        assert done.stderr.count("\n") == 1 and str(config) in done.stderr, done.stderr
        assert reason in done.stderr, (reason, done.stderr)
        assert "hunter2" not in done.stderr
    missing = mailrestore(env, "diff", "--config", str(tmp_path / "none.toml"))
    assert missing.returncode == 2 and "none.toml: no such configuration file" in missing.stderr
    config = write_config(tmp_path, "[profile.a]\n[profile.b]\n")
    unknown = mailrestore(env, "diff", "--config", str(config), "--profile", "c")
    assert unknown.returncode == 2 and "no [profile.c] (profiles: a, b)" in unknown.stderr
    bad_env = mailrestore({**env, "MAILRESTORE_DRY_RUN": "perhaps"}, "config")
    assert bad_env.returncode == 2 and "MAILRESTORE_DRY_RUN" in bad_env.stderr
