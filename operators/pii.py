"""PII masking: e-mail addresses, phone numbers, IP addresses -> fixed placeholders.

Each masker is `text -> (masked_text, count)`. The patterns are deliberately conservative where
real text is ambiguous: a phone number needs a `+` country code, or the North American 3-3-4
shape with one consistent separator (or a parenthesised area code); so dates (2024-01-15),
version numbers (1.2.3), prices ($1,234.56), page ranges ("998 999 1000") and ISBNs stay.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

STAGE = "pii"

EMAIL_TOKEN = "|||EMAIL_ADDRESS|||"
PHONE_TOKEN = "|||PHONE_NUMBER|||"
IP_TOKEN = "|||IP_ADDRESS|||"


@dataclass(frozen=True)
class PIIConfig:
    enabled: bool = True
    """Run the maskers (they never drop documents; counts become columns and stats)."""
    emails: bool = True
    phone_numbers: bool = True
    ip_addresses: bool = True


_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)

# North American numbers: (612) 439-4474, 612-439-4474, 612.439.4474, optional +1/1 prefix.
# N is 2-9 (NANP): area codes and exchanges never start with 0 or 1.
_NANP = re.compile(
    r"(?<![\w+.$€£-])"
    r"(?:(?:\+1|1)[\s.-]?)?"
    r"(?:\([2-9]\d{2}\)[\s.-]?[2-9]\d{2}[\s.-]\d{4}"  # (612) 439-4474
    r"|[2-9]\d{2}-[2-9]\d{2}-\d{4}"  # 612-439-4474
    r"|[2-9]\d{2}\.[2-9]\d{2}\.\d{4})"  # 612.439.4474
    r"(?![\w.-]*\d)"
)
_PLUS1_SPACED = re.compile(r"(?<![\w+])\+1[\s.-][2-9]\d{2}[\s.-][2-9]\d{2}[\s.-]\d{4}(?!\d)")
# International: a '+' country code, then 6-13 more digits in groups separated by single spaces,
# dashes, dots or a parenthesised trunk digit: +44 20 7946 0958, +48 89 742 14 05, +441904929220.
_INTL = re.compile(r"(?<![\w+])\+[1-9]\d{0,2}(?:[\s.-]?(?:\(0\)\s?)?\(?\d{1,5}\)?){1,6}(?!\d)")

# Cheap gates (a literal first character lets `re` scan with memchr): the full patterns, whose
# leading look-behinds make `re` try every position (~100 us per page), run only where these hit.
_NANP_GATE_DASH = re.compile(r"-\d{4}")
_NANP_GATE_DOT = re.compile(r"\.\d{4}")
_NANP_GATE_PAREN = re.compile(r"\)[\s.-]?\d{3}")
_IPV4_GATE = re.compile(r"\.\d{1,3}\.\d")
_IPV6_GATE = re.compile(r":[0-9A-Fa-f]{0,4}:")

_IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w]|\.\d)")
_IPV6_CANDIDATE = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])")


def mask_emails(text: str) -> tuple[str, int]:
    if "@" not in text:
        return text, 0
    return _EMAIL.subn(EMAIL_TOKEN, text)


def _intl_ok(match: re.Match) -> bool:
    digits = sum(ch.isdigit() for ch in match.group(0))
    return 8 <= digits <= 15


def mask_phone_numbers(text: str) -> tuple[str, int]:
    has_plus = "+" in text
    n_us = n_nanp = count = 0
    if has_plus:
        text, n_us = _PLUS1_SPACED.subn(PHONE_TOKEN, text)
    if _NANP_GATE_DASH.search(text) or _NANP_GATE_DOT.search(text) or _NANP_GATE_PAREN.search(text):
        text, n_nanp = _NANP.subn(PHONE_TOKEN, text)
    if not has_plus:
        return text, n_us + n_nanp

    def intl(match: re.Match) -> str:
        nonlocal count
        if _intl_ok(match):
            count += 1
            return PHONE_TOKEN
        return match.group(0)

    text = _INTL.sub(intl, text)
    return text, n_us + n_nanp + count


def mask_ips(text: str) -> tuple[str, int]:
    n4 = count = 0
    if _IPV4_GATE.search(text):
        text, n4 = _IPV4.subn(IP_TOKEN, text)

    def v6(match: re.Match) -> str:
        nonlocal count
        candidate = match.group(0)
        if candidate.count(":") >= 2 and any(c.isalnum() for c in candidate):
            try:
                ipaddress.IPv6Address(candidate)
            except ValueError:
                return candidate
            count += 1
            return IP_TOKEN
        return candidate

    if _IPV6_GATE.search(text):
        text = _IPV6_CANDIDATE.sub(v6, text)
    return text, n4 + count


def mask_pii(text: str, cfg: PIIConfig | None = None) -> tuple[str, dict[str, int]]:
    """All enabled maskers in order (e-mails first: their local parts can look like numbers)."""
    cfg = cfg or PIIConfig()
    counts = {"emails": 0, "phone_numbers": 0, "ip_addresses": 0}
    if cfg.emails:
        text, counts["emails"] = mask_emails(text)
    if cfg.phone_numbers:
        text, counts["phone_numbers"] = mask_phone_numbers(text)
    if cfg.ip_addresses:
        text, counts["ip_addresses"] = mask_ips(text)
    return text, counts
