"""Django settings, read from the environment and parsed strictly (see config/env.py).

Variables: DATABASE_URL, REDIS_URL, SECRET_KEY, DEBUG, ALLOWED_HOSTS, ARTIFACTS_DIR
(plus a few optional tuning knobs documented in README). There is no SQLite fallback:
the local runner (``python -m config.devservices``) starts a real PostgreSQL and Redis
from pip packages when DATABASE_URL / REDIS_URL are unset.
"""

from __future__ import annotations

import warnings
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from config.env import ENV, parse_database_url, parse_redis_url
from labelapp import tasknames  # plain strings: the task-name registry

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = ENV.bool("DEBUG", default=False)

SECRET_KEY = ENV.raw("SECRET_KEY") or ""
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set; it is required when DEBUG is off "
            "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(50))')"
        )
    SECRET_KEY = "insecure-dev-key-only-used-with-DEBUG-on"
elif not DEBUG and len(SECRET_KEY) < 50:
    raise ImproperlyConfigured(
        "SECRET_KEY must be at least 50 characters when DEBUG is off"
    )

ALLOWED_HOSTS = ENV.list(
    "ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else []
)
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is off")

_database_url = ENV.raw("DATABASE_URL")
if not _database_url:
    raise ImproperlyConfigured(
        "DATABASE_URL is not set. Run through `make run` / `make test` (they start an "
        "embedded PostgreSQL under ./var/) or set DATABASE_URL=postgres://user@host/db"
    )
DATABASES = {"default": parse_database_url("DATABASE_URL", _database_url)}
DATABASES["default"]["TEST"] = {"NAME": ENV.raw("TEST_DATABASE_NAME") or None}

_redis_url = ENV.raw("REDIS_URL")
if not _redis_url:
    raise ImproperlyConfigured(
        "REDIS_URL is not set. Run through `make run` / `make test` (they start an "
        "embedded Redis under ./var/) or set REDIS_URL=redis://host:6379/0"
    )
REDIS_URL = parse_redis_url("REDIS_URL", _redis_url)

ARTIFACTS_DIR = ENV.path("ARTIFACTS_DIR", default=BASE_DIR / "var" / "artifacts")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served by us, not a CDN (/api/docs/)
    "axes",
    "labelapp",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files under gunicorn: hashed names, compressed, cached for ever.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "frontend.middleware.ContentSecurityPolicyMiddleware",
    # Last: turns a locked-out login into its 429 response.
    "axes.middleware.AxesMiddleware",
]

# Login lockout (django-axes): AXES_FAILURE_LIMIT failed logins for one username from
# one address lock that pair out for AXES_COOLOFF_MINUTES. By username *and* address,
# so an attacker cannot lock everyone out from one address, nor a user out from
# everywhere. The first backend only refuses locked-out attempts (see its docstring).
AUTHENTICATION_BACKENDS = [
    "labelapp.api.authentication.LoginLockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = ENV.int("AXES_FAILURE_LIMIT", default=10, minimum=1)
AXES_COOLOFF_TIME = timedelta(
    minutes=ENV.int("AXES_COOLOFF_MINUTES", default=15, minimum=1)
)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Reverse proxies in front of the web process that append to X-Forwarded-For (0: the
# client connects directly; REMOTE_ADDR is its address). Used by the login lockout
# and by the failed-token throttle.
PAIRLOOP_PROXY_COUNT = ENV.int("PAIRLOOP_PROXY_COUNT", default=0, minimum=0)
if PAIRLOOP_PROXY_COUNT:
    AXES_IPWARE_PROXY_COUNT = PAIRLOOP_PROXY_COUNT
    AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"]
else:
    AXES_IPWARE_META_PRECEDENCE_ORDER = ["REMOTE_ADDR"]

# Failed API token authentication: more than API_TOKEN_FAILURE_LIMIT unknown tokens
# from one address within API_TOKEN_FAILURE_WINDOW_SECONDS and that address gets 429
# for token lookups until the window ends (labelapp.api.authentication). Counted in
# Redis (the "throttle" cache) so every web process shares the count. Tokens this
# process has verified recently never reach the check: an annotator labelling at
# speed costs nothing and is never throttled.
API_TOKEN_FAILURE_LIMIT = ENV.int("API_TOKEN_FAILURE_LIMIT", default=20, minimum=1)
API_TOKEN_FAILURE_WINDOW_SECONDS = ENV.int(
    "API_TOKEN_FAILURE_WINDOW_SECONDS", default=300, minimum=1
)

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # config/templates: the API docs page (Swagger UI without inline code).
        "DIRS": [BASE_DIR / "config" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# `manage.py collectstatic` writes here; WhiteNoise serves it (docker-compose's web
# runs collectstatic before gunicorn starts).
STATIC_ROOT = ENV.path("STATIC_ROOT", default=BASE_DIR / "var" / "staticfiles")
if DEBUG:
    # Served from the apps' folders (WhiteNoise's finders); STATIC_ROOT may not exist.
    warnings.filterwarnings("ignore", message="No directory at", module="whitenoise")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # With DEBUG on, files are served from the apps' folders as they are; with it
    # off, from STATIC_ROOT under content-hashed names, gzip/brotli compressed, with
    # a far-future Cache-Control (WhiteNoise marks hashed names immutable).
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "frontend:login"
LOGIN_REDIRECT_URL = "frontend:projects"
LOGOUT_REDIRECT_URL = "frontend:login"

# Request bodies above this are refused (API: 413 JSON; imports go through files/CLI).
DATA_UPLOAD_MAX_MEMORY_SIZE = ENV.int(
    "DATA_UPLOAD_MAX_MEMORY_SIZE", default=1024 * 1024, minimum=1024
)

# Security headers; with DEBUG off these satisfy `manage.py check --deploy`.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
if not DEBUG:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = ENV.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = ENV.int("SECURE_HSTS_SECONDS", default=31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    if ENV.bool("TRUST_X_FORWARDED_PROTO", default=False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CSRF_TRUSTED_ORIGINS = ENV.list("CSRF_TRUSTED_ORIGINS", default=[])

# How long each process may reuse a token's user row (labelapp.api.authentication):
# a deleted token or deactivated user is refused everywhere after at most this long.
API_TOKEN_CACHE_SECONDS = ENV.int("API_TOKEN_CACHE_SECONDS", default=5, minimum=0)
# Answer plain next/label API requests without the middleware and DRF dispatch
# (labelapp/queue/fastlane.py; same services, same responses). Off: all through Django.
API_FAST_LANE = ENV.bool("API_FAST_LANE", default=True)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "labelapp.api.authentication.TokenAuthentication",  # DRF's, one query
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON with a nesting-depth limit and no NUL characters (labelapp.api.parsers).
    "DEFAULT_PARSER_CLASSES": [
        "labelapp.api.parsers.JSONParser",
        "labelapp.api.parsers.FormParser",
        "labelapp.api.parsers.MultiPartParser",
    ],
    "NUM_PROXIES": PAIRLOOP_PROXY_COUNT or None,
    "DEFAULT_PAGINATION_CLASS": "labelapp.api.pagination.IdCursorPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    "EXCEPTION_HANDLER": "labelapp.api.errors.exception_handler",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Pairloop API",
    "DESCRIPTION": "Pairwise preference labelling, reward models and rejection sampling.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from the drf-spectacular-sidecar package (works offline).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "labelapp.api.errors.document_error_responses",
    ],
}

# The process-local default cache, and Redis for counters every process must share.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "throttle": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "pairloop-throttle",
        "OPTIONS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5},
    },
}

# Celery: queues and routes are declared once here (config/celery.py reads them).
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
# "default": imports, exports, aggregation, lease reclaim. "gpu": reward-model
# training and sampling rounds; its workers run with --concurrency 1 and
# --prefetch-multiplier 1 so one job owns the accelerator at a time.
CELERY_TASK_QUEUES = (
    Queue("default", routing_key="default"),
    Queue("gpu", routing_key="gpu"),
)
# Task names come from labelapp.tasknames (plain strings: importing it loads
# nothing of Django); every "pairloop.gpu.*" task is routed to the gpu queue.
CELERY_TASK_ROUTES = {"pairloop.gpu.*": {"queue": "gpu"}}
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Longer than the longest task time limit, so an unacked long job is not
    # redelivered to a second worker while the first is still running it.
    "visibility_timeout": 4 * 3600,
}
CELERY_TIMEZONE = "UTC"
# Task and worker events, so Flower (or `celery -A config events`) shows the
# workers, their queues and each task's life: received, started, succeeded.
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": ENV.raw("LOG_LEVEL") or "INFO"},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# Jobs: a running job whose worker has not heartbeat for this long is requeued (or
# failed after PAIRLOOP_JOB_MAX_ATTEMPTS) by the periodic reaper.
PAIRLOOP_JOB_STALE_SECONDS = ENV.int(
    "PAIRLOOP_JOB_STALE_SECONDS", default=120, minimum=2
)
PAIRLOOP_JOB_HEARTBEAT_SECONDS = ENV.int(
    "PAIRLOOP_JOB_HEARTBEAT_SECONDS", default=5, minimum=1
)
PAIRLOOP_JOB_MAX_ATTEMPTS = ENV.int("PAIRLOOP_JOB_MAX_ATTEMPTS", default=3, minimum=1)
# Training jobs (reward model, policy) run data-parallel on this many local
# processes (one per GPU; gloo on CPU) when above 1; 1 trains in the worker.
PAIRLOOP_TRAIN_NPROC = ENV.int("PAIRLOOP_TRAIN_NPROC", default=1, minimum=1)
_beat_every = ENV.int("PAIRLOOP_BEAT_SECONDS", default=30, minimum=1)
CELERY_BEAT_SCHEDULE = {
    "reap-stale-jobs": {"task": tasknames.REAP_STALE_JOBS, "schedule": _beat_every},
    "reclaim-expired-leases": {
        "task": tasknames.RECLAIM_LEASES,
        "schedule": _beat_every,
    },
    # Also the backstop for trigger checks the broker did not take after a label.
    "check-retrain-triggers": {
        "task": tasknames.CHECK_TRIGGERS,
        "schedule": _beat_every,
    },
}
