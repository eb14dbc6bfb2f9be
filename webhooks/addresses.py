"""Where a webhook may be sent: the one rule against server-side request forgery (SSRF).

A subscriber chooses the URL, and our server then makes requests to it. Without this rule
a subscriber could have us POST to the instance metadata service (169.254.169.254 on EC2),
to the database or Redis on the private network, or to the server itself. So the URL's host
is resolved and every address it resolves to must be public: not loopback, private,
link-local, multicast, reserved or unspecified. The check runs when a subscription is saved
(a validator on the model field, so the API and the admin answer alike) and again before
every delivery, because DNS can change; the delivery then connects to the address it
checked, so a second look-up cannot swap in another one.

``settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS`` (development and tests) lifts both this and the
https-only rule.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError


@dataclasses.dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (``address``) and what to ask for there."""

    scheme: str
    host: str  # as written in the URL (the TLS server name and the Host header)
    port: int
    address: str  # the resolved address that passed the check
    path: str  # path and query

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``address`` is not a public destination, or None if it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    for name, flag in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
    ):
        if flag:
            return name
    if not address.is_global:  # shared address space (100.64/10) and the like
        return "not public"
    return None


def check_url(url: str, *, resolve=socket.getaddrinfo) -> Target:
    """The checked target of ``url``; raises ``ValidationError`` saying why it is refused."""
    allow_private = settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(f"Not a valid URL: {exc}.", code="invalid") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise ValidationError("The URL must use https.", code="insecure")
    host = parts.hostname
    if not host:
        raise ValidationError("The URL has no host.", code="invalid")
    if parts.username or parts.password:
        raise ValidationError("The URL must not contain a user name or password.", code="invalid")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        infos = resolve(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        raise ValidationError(f"The host {host!r} cannot be resolved.", code="unresolvable") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise ValidationError(f"The host {host!r} cannot be resolved.", code="unresolvable")
    if not allow_private:
        for address in addresses:
            problem = _forbidden(ipaddress.ip_address(address.split("%")[0]))
            if problem:
                raise ValidationError(
                    f"The host {host!r} resolves to {address}, a {problem} address; "
                    "webhooks are only sent to public addresses.",
                    code="forbidden_address",
                )
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(scheme=parts.scheme, host=host, port=port, address=addresses[0], path=path)


def validate_webhook_url(url: str) -> None:
    """Model-field validator: the subscription's URL must pass ``check_url`` when saved."""
    check_url(url)
