"""What the commands share: turning options into a Job and store options."""

from __future__ import annotations

from pathlib import Path

from restore import report
from restore.catalog import Catalog
from restore.credentials import get_password
from restore.diff import DiffSettings
from restore.errors import UsageError
from restore.mailnames import normalize_address
from restore.pipeline import Job
from restore.recipients import DEFAULT_RECIPIENT_HEADERS, AliasMap
from restore.stores import StoreOptions
from restore.times import parse_time_option


def wants_imap(*specs: str | None) -> bool:
    return any(s and s.startswith(("imap://", "imaps://")) for s in specs)


def store_options(opts: dict, *specs: str | None) -> StoreOptions:
    password = None
    if wants_imap(*specs):
        imap_spec = next(s for s in specs if s and s.startswith(("imap://", "imaps://")))
        password = get_password(opts.get("password_file"), imap_spec)
    users = None
    if opts.get("users_file"):
        users = read_users_file(opts["users_file"])
    return StoreOptions(password=password, insecure=bool(opts.get("insecure")), users=users,
                        match=opts.get("match") or "auto")


def read_users_file(path: str) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"--users {path}: {exc.strerror or exc}") from None
    users = [normalize_address(line.split("#", 1)[0]) for line in lines]
    return [u for u in users if u]


def make_job(opts: dict, *specs: str | None, progress: bool = True) -> Job:
    aliases = AliasMap.load(opts["alias_map"]) if opts.get("alias_map") else AliasMap()
    settings = DiffSettings(
        match=opts.get("match") or "auto",
        recipient_headers=tuple(opts.get("recipient_headers") or DEFAULT_RECIPIENT_HEADERS),
        aliases=aliases,
        since=parse_time_option(opts.get("since"), "--since"),
        until=parse_time_option(opts.get("until"), "--until"),
        gap=opts.get("gap"),
        create_missing=bool(opts.get("create_missing")),
    )
    if settings.since is not None and settings.until is not None and settings.since >= settings.until:
        raise UsageError("--since must be earlier than --until")
    return Job(
        catalog=Catalog(opts.get("catalog")),
        settings=settings,
        store_options=store_options(opts, *specs),
        progress=report.progress_factory(progress and not opts.get("as_json")),
    )
