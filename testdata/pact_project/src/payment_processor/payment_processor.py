"""Payment Processor: charges and refunds in minor units (contract: payment_processor)."""

import hashlib

PACT_CHARGE = "PACT:payment_processor:charge_card"
PACT_REFUND = "PACT:payment_processor:refund"


def charge_card(card_number: str, amount_cents: int) -> str:
    """Charge amount_cents to a card; return the receipt id."""
    if amount_cents <= 0:
        raise ValueError("amount must be positive")
    digest = hashlib.sha256(f"{card_number}:{amount_cents}".encode()).hexdigest()
    return "rcpt_" + digest[:12]


def refund(charged_cents: int, percent: int) -> int:
    """Refund part of a charge."""
    if not 0 <= percent <= 100:
        raise ValueError("percent must be within 0..100")
    return charged_cents * percent // 100
