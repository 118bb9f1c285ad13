"""Dovecot-style mail path templates: ``/var/vmail/%d/%n/Maildir``.

``%u`` is the full address, ``%n`` its local part, ``%d`` its domain, ``%%`` a
literal ``%``. A template is split at the first path component holding a
variable: the part before is the fixed ``root``; each later component is
either a literal name or a pattern that captures variables from a
directory name. Readers walk the tree component by component (so a
directory name is matched whole and never interpreted as a path), and
writers ``expand`` a user back into a path.

A user is ``%u`` when the template has it, else ``%n@%d``, else ``%n``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from restore.errors import UsageError
from restore.recipients import invalid_mailbox_reason, normalize_address

VARIABLE = re.compile(r"%(.)")
# A local part or domain never holds '@' in a directory name we accept;
# a full address may.
CAPTURE = {"u": r"[^/]+", "n": r"[^/@]+", "d": r"[^/@]+"}


def is_template(path: str) -> bool:
    """Whether ``path`` holds a user variable (``%u``, ``%n``, ``%d``)."""
    return any(m.group(1) in CAPTURE for m in VARIABLE.finditer(path))


@dataclass(frozen=True, slots=True)
class Component:
    """One path component below the root: a literal name or a capturing pattern."""

    literal: str | None
    pattern: re.Pattern[str] | None

    def match(self, name: str) -> dict[str, str] | None:
        """Variables captured from a directory ``name``, or None if it does not fit."""
        if self.pattern is None:
            return {} if name == self.literal else None
        m = self.pattern.fullmatch(name)
        return {k: v for k, v in m.groupdict().items() if v is not None} if m else None


class PathTemplate:
    def __init__(self, template: str):
        self.template = template
        for m in VARIABLE.finditer(template):
            if m.group(1) not in CAPTURE and m.group(1) != "%":
                raise UsageError(f"{template}: unsupported variable %{m.group(1)} (use %u, %n, %d)")
        names = {m.group(1) for m in VARIABLE.finditer(template)}
        if not names & {"u", "n"}:
            raise UsageError(f"{template}: a per-user template needs %u or %n")
        parts = template.split("/")
        first = next(i for i, part in enumerate(parts) if is_template(part))
        fixed = "/".join(parts[:first]).replace("%%", "%")
        self.root = fixed or ("/" if template.startswith("/") else ".")
        self.components = [_component(part) for part in parts[first:] if part]

    def user(self, variables: dict[str, str]) -> str:
        """The user named by the variables captured along one path."""
        if "u" in variables:
            return normalize_address(variables["u"])
        if "d" in variables:
            return normalize_address(f"{variables['n']}@{variables['d']}")
        return variables["n"]

    def expand(self, user: str) -> str:
        """The path of ``user``'s mailbox; raises ValueError when ``user`` cannot be one."""
        reason = invalid_mailbox_reason(user)
        if reason:
            raise ValueError(f"{user!r}: {reason}")
        local, at, domain = user.rpartition("@")
        if not at:
            local = user
        if "%d" in self.template and not domain:
            raise ValueError(f"{user!r}: no domain, but the path template needs %d")
        values = {"u": user, "n": local, "d": domain, "%": "%"}
        return VARIABLE.sub(lambda m: values[m.group(1)], self.template)

    def __repr__(self) -> str:
        return f"PathTemplate({self.template!r})"


def _component(part: str) -> Component:
    if not is_template(part):
        return Component(part.replace("%%", "%"), None)
    regex, seen = [], set()
    for piece in re.split(r"(%.)", part):
        if len(piece) == 2 and piece[0] == "%" and piece[1] in CAPTURE:
            name = piece[1]
            regex.append(f"(?P={name})" if name in seen else f"(?P<{name}>{CAPTURE[name]})")
            seen.add(name)
        else:
            regex.append(re.escape(piece.replace("%%", "%")))
    return Component(None, re.compile("".join(regex)))
