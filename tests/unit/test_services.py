"""Well-known service lookup."""

import pytest

from fastsmtp.services import SERVICES, Service, lookup_service


@pytest.mark.parametrize(
    "name, host, port, secure",
    [
        ("gmail", "smtp.gmail.com", 465, True),
        ("Google Mail", "smtp.gmail.com", 465, True),
        ("GMAIL.COM", "smtp.gmail.com", 465, True),
        ("someone@googlemail.com", "smtp.gmail.com", 465, True),
        ("hotmail.com", "smtp-mail.outlook.com", 587, False),
        ("Outlook365", "smtp.office365.com", 587, False),
        ("office-365", "smtp.office365.com", 587, False),
        ("me@icloud.com", "smtp.mail.me.com", 587, False),
        ("Amazon SES", "email-smtp.us-east-1.amazonaws.com", 465, True),
        ("postmark", "smtp.postmarkapp.com", 2525, False),
    ],
)
def test_lookup_by_name_alias_domain_and_address(name, host, port, secure):
    service = lookup_service(name)
    assert (service.host, service.port, service.secure) == (host, port, secure)


def test_unknown_service_is_a_key_error():
    with pytest.raises(KeyError, match="unknown SMTP service 'no-such-provider'"):
        lookup_service("no-such-provider")


def test_every_entry_is_complete():
    assert len({s.name for s in SERVICES.values()}) >= 20
    for service in SERVICES.values():
        assert isinstance(service, Service)
        assert "." in service.host and 0 < service.port < 65536
