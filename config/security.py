"""Security headers: one list, used by the middleware and by any path that bypasses
it (the queue's fast lane, labelapp/queue/fastlane.py), so a header added here
reaches both.

Model output is untrusted; besides server-side sanitising, the CSP forbids inline
scripts and event handlers and any script not served by us.

Two kinds of header:

* ``own_headers()``: what Pairloop adds itself. ContentSecurityPolicyMiddleware
  (frontend/middleware.py) sets them on every response outside
  ``CSP_EXEMPT_PREFIXES``. **Add a new security header here.**
* ``django_headers()``: what Django's SecurityMiddleware and XFrameOptionsMiddleware
  set, computed from the same settings they read. Django's middleware keeps setting
  them on its path (with its per-view exemptions); a bypass sends this list.

``response_headers()`` is both, as a bypass must send them. A bypass serves only
while ``settings.MIDDLEWARE`` holds nothing but ``BYPASSABLE_MIDDLEWARE``: a
middleware added later turns the bypass off (everything goes through Django) instead
of being silently skipped.
"""

from __future__ import annotations

from django.conf import settings

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

# The admin and API docs pages ship inline scripts of their own.
CSP_EXEMPT_PREFIXES = ("/admin/", "/api/docs/")

# The middleware whose effect on a token-authenticated JSON API response a bypass
# reproduces: the headers below, plus (in the bypass itself) Vary: Cookie for the
# session middleware. The others add nothing to such a response.
BYPASSABLE_MIDDLEWARE = frozenset(
    (
        "django.middleware.security.SecurityMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
        "frontend.middleware.ContentSecurityPolicyMiddleware",
        # Serves STATIC_URL paths only; anything else passes through untouched.
        "whitenoise.middleware.WhiteNoiseMiddleware",
        # Acts only on a request a login attempt marked locked out (axes_locked_out);
        # token-authenticated API requests never log in.
        "axes.middleware.AxesMiddleware",
    )
)


def own_headers() -> list[tuple[str, str]]:
    """The headers Pairloop's own middleware adds (outside CSP_EXEMPT_PREFIXES)."""
    return [("Content-Security-Policy", CSP)]


def django_headers(*, secure: bool) -> list[tuple[str, str]]:
    """What SecurityMiddleware and XFrameOptionsMiddleware add to a response of a
    request that is (``secure``) or is not over HTTPS, from their settings."""
    headers = [("X-Frame-Options", getattr(settings, "X_FRAME_OPTIONS", "DENY"))]
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        policy = settings.SECURE_REFERRER_POLICY
        if not isinstance(policy, str):
            policy = ",".join(policy)
        headers.append(("Referrer-Policy", policy))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        coop = settings.SECURE_CROSS_ORIGIN_OPENER_POLICY
        headers.append(("Cross-Origin-Opener-Policy", coop))
    if secure and settings.SECURE_HSTS_SECONDS:
        hsts = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            hsts += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            hsts += "; preload"
        headers.append(("Strict-Transport-Security", hsts))
    return headers


def response_headers(*, secure: bool) -> list[tuple[str, str]]:
    """Every security header of an API response, as a bypass must send them."""
    return [*django_headers(secure=secure), *own_headers()]


def bypass_allowed() -> bool:
    """Whether a bypass of MIDDLEWARE still sends what the middleware would."""
    return set(settings.MIDDLEWARE) <= BYPASSABLE_MIDDLEWARE
