"""Well-known SMTP services: a name, an alias or an e-mail domain mapped to host and port.

The equivalent of nodemailer's ``service: "gmail"`` option. Lookups ignore case, spaces,
dashes and dots in names (``"Gmail"``, ``"Google Mail"`` and ``"gmail.com"`` all work), and
an e-mail address works too (its domain is looked up).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Service", "lookup_service", "SERVICES"]


@dataclass(frozen=True, slots=True)
class Service:
    """Connection settings of a well-known provider.

    Attributes:
        name: The canonical service name.
        host: SMTP submission host.
        port: Submission port.
        secure: True for implicit TLS (port 465 style); False means STARTTLS is required.
    """

    name: str
    host: str
    port: int
    secure: bool


# name: (host, port, secure, aliases, e-mail domains). STARTTLS services are used with
# require_tls, so "secure=False" never means plaintext for these providers.
_DATA: dict[str, tuple[str, int, bool, tuple[str, ...], tuple[str, ...]]] = {
    "Gmail": ("smtp.gmail.com", 465, True, ("Google Mail", "GoogleMail"),
              ("gmail.com", "googlemail.com")),
    "Outlook365": ("smtp.office365.com", 587, False, ("Office365", "Microsoft365"), ()),
    "Hotmail": ("smtp-mail.outlook.com", 587, False, ("Outlook", "Outlook.com", "Live"),
                ("hotmail.com", "outlook.com", "live.com", "msn.com")),
    "Yahoo": ("smtp.mail.yahoo.com", 465, True, ("Yahoo Mail",), ("yahoo.com",)),
    "AOL": ("smtp.aol.com", 587, False, ("AOL Mail",), ("aol.com",)),
    "iCloud": ("smtp.mail.me.com", 587, False, ("Me", "Mac"), ("icloud.com", "me.com", "mac.com")),
    "Zoho": ("smtp.zoho.com", 465, True, ("Zoho Mail",), ("zoho.com", "zohomail.com")),
    "FastMail": ("smtp.fastmail.com", 465, True, (), ("fastmail.com", "fastmail.fm")),
    "GMX": ("mail.gmx.com", 587, False, (), ("gmx.com", "gmx.net", "gmx.de")),
    "Yandex": ("smtp.yandex.ru", 465, True, (), ("yandex.ru", "yandex.com")),
    "Mail.ru": ("smtp.mail.ru", 465, True, ("MailRu",), ("mail.ru",)),
    "QQ": ("smtp.qq.com", 465, True, (), ("qq.com",)),
    "126": ("smtp.126.com", 465, True, (), ("126.com",)),
    "163": ("smtp.163.com", 465, True, (), ("163.com",)),
    "SES": ("email-smtp.us-east-1.amazonaws.com", 465, True,
            ("Amazon SES", "SES-US-EAST-1"), ()),
    "SES-US-WEST-2": ("email-smtp.us-west-2.amazonaws.com", 465, True, (), ()),
    "SES-EU-WEST-1": ("email-smtp.eu-west-1.amazonaws.com", 465, True, (), ()),
    "SendGrid": ("smtp.sendgrid.net", 587, False, (), ()),
    "Mailgun": ("smtp.mailgun.org", 465, True, (), ()),
    "Postmark": ("smtp.postmarkapp.com", 2525, False, ("PostmarkApp",), ()),
    "SparkPost": ("smtp.sparkpostmail.com", 587, False, ("SparkPostMail",), ()),
    "Mandrill": ("smtp.mandrillapp.com", 587, False, (), ()),
    "Mailjet": ("in-v3.mailjet.com", 587, False, (), ()),
    "Brevo": ("smtp-relay.brevo.com", 587, False, ("SendinBlue",), ()),
    "Godaddy": ("smtpout.secureserver.net", 25, False, (), ()),
}


def _key(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _build() -> dict[str, Service]:
    table: dict[str, Service] = {}
    for name, (host, port, secure, aliases, domains) in _DATA.items():
        service = Service(name, host, port, secure)
        for label in (name, *aliases):
            table[_key(label)] = service
        for domain in domains:
            table[domain.lower()] = service
    return table


#: Every lookup key (normalized names, aliases and e-mail domains) -> Service.
SERVICES: dict[str, Service] = _build()


def lookup_service(name: str) -> Service:
    """Find a well-known service by name, alias, e-mail domain or e-mail address.

    Args:
        name: e.g. ``"gmail"``, ``"Google Mail"``, ``"hotmail.com"`` or ``"me@icloud.com"``.

    Returns:
        The service's host, port and TLS mode.

    Raises:
        KeyError: The name is not a known service.
    """
    text = name.strip()
    domain = text.rpartition("@")[2].lower()
    found = SERVICES.get(domain) or SERVICES.get(_key(text))
    if found is None:
        raise KeyError(f"unknown SMTP service {name!r}")
    return found
