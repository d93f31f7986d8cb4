"""Auth Module: validates bearer tokens '<user>.<expiry>.<signature>' (contract: auth_module)."""

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)
PACT_KEY = "PACT:auth_module:validate_token"


@dataclass(frozen=True)
class TokenClaims:
    user: str
    expires_at: int


def validate_token(token: str, now: int) -> TokenClaims:
    """Parse and validate a token; return its claims."""
    parts = token.split(".")
    # Known defect (kept for the fixer's end-to-end test): a token with fewer than three
    # parts raises IndexError instead of the contract's ValueError.
    user, expiry, signature = parts[0], parts[1], parts[2]
    if not user or not expiry or not signature:
        log.error("[%s] malformed token", PACT_KEY)
        raise ValueError("malformed token")
    expires_at = int(expiry)
    if expires_at <= now:
        raise PermissionError("token expired")
    return TokenClaims(user=user, expires_at=expires_at)
