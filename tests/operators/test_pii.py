"""PII masking: the formats found in real Common Crawl text are masked with exact counts; dates,
versions, prices and number lists are not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.pii import (
    EMAIL_TOKEN,
    IP_TOKEN,
    PHONE_TOKEN,
    PIIConfig,
    mask_emails,
    mask_ips,
    mask_phone_numbers,
    mask_pii,
)

# Each of these values occurs verbatim in shared/data/text/quality/quality_seed.jsonl (real CC and
# news text); test_found_in_real_text checks that they are masked in their real context.
REAL_EMAILS = ["louise_matsakis@wired.com", "iwona.jelen@uwm.edu.pl", "comunicacionessistemadebibliotecas@udea.edu.co"]
REAL_PHONES = ["347-966-3806", "+48 89 742 14 05", "+441904929220", "(612) 439-4474", "800-873-2730", "+420 777 098 098"]
REAL_IPS = ["195.234.74.142", "10.200.2.15"]


@pytest.mark.parametrize("email", REAL_EMAILS + ["bob@example.com"])
def test_emails(email):
    assert mask_emails(f"Contact: {email}.") == (f"Contact: {EMAIL_TOKEN}.", 1)


@pytest.mark.parametrize("phone", REAL_PHONES + ["612.439.4474", "+1 612 439 4474", "1-800-873-2730", "+44 20 7946 0958", "+49 (0)30 1234567"])
def test_phones(phone):
    assert mask_phone_numbers(f"Tel. {phone} (office)") == (f"Tel. {PHONE_TOKEN} (office)", 1)


@pytest.mark.parametrize("ip, masked", [
    ("195.234.74.142", True), ("10.200.2.15", True), ("2001:db8::ff00:42:8329", True), ("::1", True),
    ("999.1.1.1", False), ("12:30:45", False), ("1.2.3", False),
])
def test_ips(ip, masked):
    text, n = mask_ips(f"from {ip} today")
    assert (n == 1) == masked
    assert (text == f"from {IP_TOKEN} today") == masked


@pytest.mark.parametrize("text", [
    "On 2024-01-15 at 10:30 the index rose 1.2 %",  # dates and times
    "Upgrade from version 1.2.3 to 2.10.4",  # versions
    "It costs $1,234.56 or €1.234,56",  # prices
    "See pages 998 999 1000",  # a number list in the real CC text
    "111 151.2379",  # also from the real CC text
    "ISBN 978-3-16-148410-0",
    "The score was +3 - 2 in 1990-1995",
])
def test_no_false_positives(text):
    assert mask_pii(text) == (text, {"emails": 0, "phone_numbers": 0, "ip_addresses": 0})


def test_counts_and_config():
    text = "Mail bob@example.com or call 612-439-4474 from 10.0.0.1 or 10.0.0.2"
    masked, counts = mask_pii(text)
    assert counts == {"emails": 1, "phone_numbers": 1, "ip_addresses": 2}
    assert masked == f"Mail {EMAIL_TOKEN} or call {PHONE_TOKEN} from {IP_TOKEN} or {IP_TOKEN}"
    only_mail, counts = mask_pii(text, PIIConfig(phone_numbers=False, ip_addresses=False))
    assert counts == {"emails": 1, "phone_numbers": 0, "ip_addresses": 0}
    assert "612-439-4474" in only_mail


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=500))
def test_total_and_idempotent(text):
    """Any text masks without error, and masking twice changes nothing more."""
    once, _ = mask_pii(text)
    twice, counts = mask_pii(once)
    assert twice == once and sum(counts.values()) == 0


@pytest.mark.shared_data
def test_found_in_real_text(shared_data: Path):
    """Each real value is masked where it actually occurs; Wikipedia text (dates, numbers, scores)
    gets no phone or IP masks at all."""
    docs = [json.loads(line)["text"] for line in (shared_data / "text/quality/quality_seed.jsonl").read_text().split("\n") if line]
    for value in REAL_EMAILS + REAL_PHONES + REAL_IPS:
        doc = next(d for d in docs if value in d)
        assert value not in mask_pii(doc)[0], value
    for name in ("wikitext-2-valid.txt", "wikitext-2-test.txt"):
        _, counts = mask_pii((shared_data / "text/lm" / name).read_text())
        assert counts == {"emails": 0, "phone_numbers": 0, "ip_addresses": 0}
