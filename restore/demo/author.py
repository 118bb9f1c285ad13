"""Plausible messages, and how the gateway and the mail store each hold a copy."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

from restore.demo.model import DOMAIN, Delivery, Mail

SENDERS = (("Martin Kowalski", "m.kowalski@partner.example"),
           ("Ana Souza", "ana@supplier.example.net"),
           ("Billing", "billing@invoices.example.org"),
           ("Jörg Müller", "joerg.mueller@kunde.example.de"),
           ("Support Desk", "support@vendor.example"),
           ("Priya Raman", "priya@consult.example.in"),
           ("Newsletter", "news@lists.example.org"))
RELAYS = ("mx1.partner.example", "mail.supplier.example.net", "out.lists.example.org",
          "smtp.vendor.example")
SENDER_TZ_MINUTES = (0, 60, -300, 330, -480)
WORDS = ("invoice quarterly report meeting schedule contract review draft budget "
         "shipment delivery update agenda proposal minutes offer renewal ticket "
         "server migration backup weekend lunch travel approval deadline").split()


def rfc5322(t: int, tz_minutes: int = 0) -> str:
    return format_datetime(datetime.fromtimestamp(t, timezone(timedelta(minutes=tz_minutes))))


def _address(user: str) -> str:
    return f"{user.partition('@')[0].capitalize()} <{user}>"


class Author:
    """Makes plausible messages from the shared random generator."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def message_id(self) -> str:
        return f"<{self.rng.getrandbits(64):016x}.{self.rng.randrange(10**6)}@mail.example.net>"

    def body(self, from_lines: bool = False) -> str:
        rng = self.rng
        lines = ["Hello,", ""]
        for _ in range(rng.randint(1, 5)):
            lines.append(" ".join(rng.choices(WORDS, k=rng.randint(4, 12))).capitalize() + ".")
        if from_lines:
            # mbox must quote these (mboxrd) and a reader must unquote them
            lines += ["", "From the minutes of last week:", ">From an earlier reply, quoted.",
                      ">>From deeper still."]
        lines += ["", "Grüße / regards", ""]
        return "\n".join(lines)

    def compose(self, key: str, received: int, to: list[str], *, cc: tuple[str, ...] = (),
                envelope: list[str] | None = None, message_id: str | None = None,
                without_message_id: bool = False, sender: tuple[str, str] | None = None,
                from_lines: bool = False) -> Mail:
        """A message received at ``received``; by default one envelope header per To."""
        rng = self.rng
        name, address = sender or rng.choice(SENDERS)
        date = rfc5322(received - rng.randint(2, 600), rng.choice(SENDER_TZ_MINUTES))
        if not without_message_id:
            message_id = message_id or self.message_id()
        headers = [f"From: {name} <{address}>", f"To: {', '.join(map(_address, to))}"]
        if cc:
            headers.append(f"Cc: {', '.join(map(_address, cc))}")
        headers += [f"Subject: {rng.choice(WORDS).capitalize()} {rng.choice(WORDS)}",
                    f"Date: {date}"]
        if message_id:
            headers.append(f"Message-ID: {message_id}")
        headers += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
                    "Content-Transfer-Encoding: 8bit", f"X-Incident-Key: {key}"]
        return Mail(key=key, received=received, sender=address,
                    envelope=envelope or [f"<{a}>" for a in to],
                    original="\n".join(headers) + "\n\n" + self.body(from_lines),
                    message_id=message_id, queue_id=f"{rng.getrandbits(40):010X}")


def _gateway_hop(mail: Mail, copy: int) -> str:
    relay = RELAYS[int(mail.queue_id, 16) % len(RELAYS)]
    queue_id = mail.queue_id if mail.copies[copy] == 0 else f"{mail.queue_id}{copy}"
    return (f"Received: from {relay} ({relay} [198.51.100.{int(mail.queue_id, 16) % 250 + 1}])\n"
            f"\tby gw.{DOMAIN} (Postfix) with ESMTPS id {queue_id};\n"
            f"\t{rfc5322(mail.received + mail.copies[copy])}\n")


def archive_text(mail: Mail, copy: int) -> str:
    """The copy as the gateway archived it, before delivery."""
    envelope = "".join(f"X-Envelope-To: {value}\n" for value in mail.envelope)
    return envelope + _gateway_hop(mail, copy) + mail.original


def delivered_text(mail: Mail, user: str, delivery: Delivery) -> str:
    """The copy as the mail store delivered it: delivery headers on top, spam verdict."""
    head, _, body = mail.original.partition("\n\n")
    if delivery.spam:
        head = head.replace("\nSubject: ", "\nSubject: [SPAM] ", 1)
        verdict = "X-Spam-Flag: YES\nX-Spam-Status: Yes, score=7.9 required=5.0\n"
    else:
        verdict = "X-Spam-Status: No, score=-0.4 required=5.0\n"
    hops = [f"Received: from gw.{DOMAIN} (gw.{DOMAIN} [192.0.2.25])\n"
            f"\tby mail.{DOMAIN} with LMTP id {mail.queue_id.lower()}\n"
            f"\tfor <{user}>; {rfc5322(delivery.when)}\n"]
    if delivery.via_backup_mx:
        hops.append(f"Received: from gw.{DOMAIN} by backup-mx.{DOMAIN} (Postfix) with ESMTP;\n"
                    f"\t{rfc5322(mail.received + 4)}\n")
    hops.append(_gateway_hop(mail, 0))
    return (f"Return-Path: <{mail.sender}>\nDelivered-To: {user}\n" + "".join(hops)
            + head + "\n" + verdict + "\n" + body)
