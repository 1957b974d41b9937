"""Normalisation: trimmed identifiers, lower-case emails, phone numbers as international digits.

Pure functions. An identifier that cannot be normalised is reported, not guessed at.
"""

from __future__ import annotations

import re
from typing import Any

from services.common.steps import Rejection
from services.ingest import reasons

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE_NOISE = re.compile(r"[\s\-().]")


def normalise_email(value: str) -> str | None:
    email = value.strip().lower()
    return email if _EMAIL.match(email) else None


def normalise_phone(value: str) -> str | None:
    """International format, digits only: '+353 (86) 123-4567' and '00353861234567' -> '353861234567'.

    Numbers without a country code cannot be told apart from local ones, so only '+' or '00'
    prefixed numbers, or bare digit strings already in E.164 length, are accepted.
    """
    phone = _PHONE_NOISE.sub("", value.strip())
    if phone.startswith("+"):
        phone = phone[1:]
    elif phone.startswith("00"):
        phone = phone[2:]
    if not phone.isdigit() or not 8 <= len(phone) <= 15 or phone.startswith("0"):
        return None
    return phone


def normalise_identity(identity: dict[str, Any]) -> dict[str, Any] | Rejection:
    out: dict[str, Any] = {}
    for field, value in identity.items():
        value = value.strip() if isinstance(value, str) else value
        out[field] = value or None
    if out.get("email"):
        email = normalise_email(out["email"])
        if email is None:
            return Rejection(reasons.INVALID_EMAIL, "identity.email is not an email address", "normalise")
        out["email"] = email
    if out.get("phone"):
        phone = normalise_phone(out["phone"])
        if phone is None:
            return Rejection(
                reasons.INVALID_PHONE,
                "identity.phone is not an international number (+CC..., 8-15 digits)",
                "normalise",
            )
        out["phone"] = phone
    return out


def normalise(record_type: str, record: dict[str, Any], now_ms: int) -> dict[str, Any] | Rejection:
    """Trim and canonicalise the fields that call for it; stamp received_time."""
    identity = normalise_identity(record.get("identity") or {})
    if isinstance(identity, Rejection):
        return identity
    out = {
        **record,
        "identity": identity,
        "received_time": now_ms,
        "source": (record.get("source") or "").strip(),
    }
    if record_type in ("tag_hit", "event"):
        out["name"] = record["name"].strip()
    if record_type == "tag_hit" and isinstance(record.get("value"), str):
        out["value"] = record["value"].strip()
    if record_type == "delivery_receipt":
        out["status"] = record["status"].strip().lower()
    if record_type == "location" and isinstance(record.get("region_id"), str):
        out["region_id"] = record["region_id"].strip()
    if record_type == "profile_update":
        out["attributes"] = [{**a, "name": a["name"].strip()} for a in record.get("attributes") or []]
    return out
