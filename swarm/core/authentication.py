"""`Authorization: Bearer <token>` authentication for DRF, and the drone token rule.

The drone token rule — a token of drone scope, bound to a drone by a numeric
subject id, neither revoked nor expired — is stated twice, once per language,
and both read the same columns of `core_apitoken` (prefix, digest, scope,
subject_type, subject_id, revoked_at, expires_at): here for Django's views
(`authenticate_token` + `drone_token_id`), and in
swarm/core/sql/swarm_drone_token_check.sql for every SQL path of the agent
protocol (the heartbeat statement, `swarm_agent_touch` for claims and log
appends, the deploy report's target lock). swarm/core/tests/test_drone_token_rule.py
holds them together.
"""
import re
from datetime import timedelta

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication

from swarm.core.auth_limits import authenticate_token_limited
from swarm.core.choices import TokenScope
from swarm.core.models import ApiToken
from swarm.core.principals import Principal
from swarm.core.tokens import digests_match, split_prefix

# Writing last_used_at on every request would make each authenticated read a
# write; a minute's precision is enough for "is this token still in use?".
LAST_USED_PRECISION = timedelta(seconds=60)

#: `subject_type` of a token bound to a drone.
DRONE_SUBJECT = "drone"
#: A drone token's `subject_id`: the drone's id, as swarm_drone_token_check reads it (`^[0-9]{1,18}$`).
DRONE_SUBJECT_ID = re.compile(r"[0-9]{1,18}")


def principal_from_token(token: ApiToken) -> Principal:
    """The principal a stored token stands for."""
    return Principal(
        scope=token.scope,
        tenant_id=token.tenant_id,
        token_id=token.pk,
        subject_type=token.subject_type,
        subject_id=token.subject_id,
        label=f"token:{token.name or token.prefix}",
    )


def authenticate_token(plaintext: str) -> ApiToken | None:
    """Look a presented token up by prefix and check its digest in constant time."""
    prefix = split_prefix(plaintext)
    if prefix is None:
        return None
    for token in ApiToken.objects.usable().filter(prefix=prefix):
        if digests_match(plaintext, token.digest):
            now = timezone.now()
            if token.last_used_at is None or now - token.last_used_at > LAST_USED_PRECISION:
                ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
            return token
    return None


def drone_subject_id(*, scope: str, subject_type: str, subject_id: str) -> int | None:
    """The drone a token (or its principal) of drone scope acts for; None when it is no drone token."""
    if scope != TokenScope.DRONE or subject_type != DRONE_SUBJECT or not DRONE_SUBJECT_ID.fullmatch(subject_id or ""):
        return None
    return int(subject_id)


def drone_token_id(token: ApiToken | None) -> int | None:
    """The drone id under the drone token rule for a token `authenticate_token` found (usable), else None."""
    if token is None or not token.is_usable:
        return None
    return drone_subject_id(scope=token.scope, subject_type=token.subject_type, subject_id=token.subject_id)


class BearerTokenAuthentication(BaseAuthentication):
    """Authenticate API calls with a Swarm bearer token."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        keyword, _, plaintext = header.partition(" ")
        if keyword.lower() != self.keyword.lower() or not plaintext.strip():
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <token>'.")
        token = authenticate_token_limited(request=request, plaintext=plaintext.strip())
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        return principal_from_token(token), token

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="swarm"'


class StaffSessionAuthentication(SessionAuthentication):
    """Admin-site sessions act with admin scope (CSRF enforced as usual)."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            return None
        user, auth = result
        if not user.is_staff:
            return None
        return user, auth
