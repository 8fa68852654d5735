"""Swarm settings, read from the environment (12-factor, django-environ).

Every setting is listed with its default in the README's configuration table.
`make run` and `make test` fill DATABASE_URL and REDIS_URL with embedded
services when they are not configured; nothing here starts a process.
"""
import hashlib
from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONCE

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("SWARM_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
# While `make run` is up, `var/swarm.env` names its embedded PostgreSQL and
# Redis (and the installation's secret key), so `manage.py` in another shell
# talks to the same services. Variables already set in the environment win.
RUNTIME_ENV_FILE = VAR_DIR / "swarm.env"
if RUNTIME_ENV_FILE.exists():
    environ.Env.read_env(str(RUNTIME_ENV_FILE))

SECRET_KEY = env.str("SWARM_SECRET_KEY", default="swarm-insecure-development-key-change-me")
DEBUG = env.bool("SWARM_DEBUG", default=False)
ALLOWED_HOSTS = env.list("SWARM_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("SWARM_CSRF_TRUSTED_ORIGINS", default=[])
# Absolute base URL the control plane is reachable at; used in links handed to
# runtimes and drones (metadata URL, signed downloads, bootstrap script).
SWARM_PUBLIC_URL = env.str("SWARM_PUBLIC_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "django_celery_beat",
    "channels",
    "swarm.core",
    "tenancy",
    "bundles",
    "workflows",
    "drones",
    "builds",
    "deployments",
    "axes",
    "csp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "swarm.core.inputs.StrictRequestMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Content-Security-Policy with a per-request nonce for the few inline scripts (docs/operations.md).
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

# --- Abuse and limits (docs/operations.md, "Abuse and limits") ----------------
#: Failed API token authentications allowed per client address, and per token prefix, in one window.
SWARM_AUTH_FAILURES_PER_ADDRESS = env.int("SWARM_AUTH_FAILURES_PER_ADDRESS", default=30)
SWARM_AUTH_FAILURES_PER_TOKEN_PREFIX = env.int("SWARM_AUTH_FAILURES_PER_TOKEN_PREFIX", default=10)
#: Length of one counting window in seconds; over a limit, requests are refused until the window ends.
SWARM_AUTH_FAILURE_WINDOW = env.int("SWARM_AUTH_FAILURE_WINDOW", default=60)

# Per-tenant quotas (tenancy/quotas.py): defaults for every tenant, each overridable on the tenant; 0 = unlimited.
SWARM_QUOTA_BUNDLES = env.int("SWARM_QUOTA_BUNDLES", default=10_000)
SWARM_QUOTA_BUNDLE_BYTES = env.int("SWARM_QUOTA_BUNDLE_BYTES", default=100 * 1024**3)
SWARM_QUOTA_EXECUTIONS_RUNNING = env.int("SWARM_QUOTA_EXECUTIONS_RUNNING", default=200)
SWARM_QUOTA_BUILDS_QUEUED = env.int("SWARM_QUOTA_BUILDS_QUEUED", default=1_000)

# Admin login lockout: django-axes counts failed logins in the database (its own tables).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("SWARM_ADMIN_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("SWARM_ADMIN_LOCKOUT_MINUTES", default=15.0))
# One user name from one address: a guesser is stopped, the real operator elsewhere is not locked out.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# The address the ASGI server saw (uvicorn --proxy-headers rewrites it behind a trusted proxy); never a
# client-chosen X-Forwarded-For, which would give a guesser a fresh address per try.
AXES_IPWARE_META_PRECEDENCE_ORDER = ["REMOTE_ADDR"]
AXES_HTTP_RESPONSE_CODE = 429
AXES_LOCKOUT_TEMPLATE = "admin/locked_out.html"
# Its start-up banner ("AXES: BEGIN version …") on every process and management command is noise.
AXES_VERBOSE = False

# Security headers. nosniff, Referrer-Policy and COOP on every Django response (SecurityMiddleware);
# behind TLS (SWARM_TLS=1) HSTS on every HTTPS response and cookies only over HTTPS.
SWARM_TLS = env.bool("SWARM_TLS", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_HSTS_SECONDS = env.int("SWARM_HSTS_SECONDS", default=365 * 24 * 3600) if SWARM_TLS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SWARM_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_SSL_REDIRECT = env.bool("SWARM_SSL_REDIRECT", default=False)
# Health probes from a load balancer come over plain HTTP on the private side.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SESSION_COOKIE_SECURE = SWARM_TLS
CSRF_COOKIE_SECURE = SWARM_TLS
SESSION_COOKIE_HTTPONLY = True
# A TLS-terminating proxy that sets X-Forwarded-Proto (and strips it from clients) makes requests secure.
if env.bool("SWARM_TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Scripts only from our static files or with this request's nonce (the three inline ones in templates);
# inline style attributes stay allowed (admin templates use them; they cannot run code). The vendored
# asciinema player compiles its terminal emulator from WebAssembly. WebSockets go to this origin only.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'", NONCE, "'wasm-unsafe-eval'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

ROOT_URLCONF = "swarm.urls"
ASGI_APPLICATION = "swarm.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

#: Threads per server process that run Django's (synchronous) HTTP handling.
SWARM_HTTP_THREADS = env.int("SWARM_HTTP_THREADS", default=16)
#: Connections per server process for the requests answered on the event loop (swarm/core/fast_routes.py).
SWARM_FASTPATH_DB_CONNECTIONS = env.int("SWARM_FASTPATH_DB_CONNECTIONS", default=8)
#: Claim groups per server process with the database at once (builds/claim_groups.py); claims that
#: arrive while this many are in flight wait and go together in the next group.
SWARM_CLAIM_GROUPS = env.int("SWARM_CLAIM_GROUPS", default=2)
#: Mark answers made on the event loop with `Swarm-Answered-By: event-loop` (the test suite turns it on).
SWARM_FAST_PATH_HEADER = env.bool("SWARM_FAST_PATH_HEADER", default=False)

DATABASES = {"default": env.db("DATABASE_URL", default="postgresql://127.0.0.1:5432/swarm")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("SWARM_DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# HTTP requests run on SWARM_HTTP_THREADS long-lived threads per server process
# (swarm/core/http_asgi.py), so each thread may keep one persistent connection.
# SWARM_DB_POOL=1 uses psycopg's pool instead (per process, shared by the HTTP
# threads, Channels consumers and Celery threads, at most SWARM_DB_POOL_MAX
# connections); `make run` and the benchmarks turn it on.
if env.bool("SWARM_DB_POOL", default=False):
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("SWARM_DB_POOL_MIN", default=2),
        "max_size": env.int("SWARM_DB_POOL_MAX", default=20),
        "timeout": env.float("SWARM_DB_POOL_TIMEOUT", default=10.0),
    }
# Test databases are named after the checkout so that two checkouts on one
# machine (parallel work trees, CI next to a session) never share one.
DATABASES["default"]["TEST"] = {
    "NAME": env.str(
        "SWARM_TEST_DATABASE_NAME",
        default="test_swarm_" + hashlib.sha256(str(BASE_DIR).encode()).hexdigest()[:10],
    ),
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env.str("SWARM_CACHE_PREFIX", default="swarm"),
    }
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "swarm.core.channel_layer.RedisChannelLayer",
        # redis-py 8 reads with a 5 s socket timeout by default, the same as channels_redis's
        # BZPOPMIN timeout: every idle consumer died with TimeoutError after ~5 s. Read longer.
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30, "health_check_interval": 15}],
                   "prefix": env.str("SWARM_CHANNELS_PREFIX", default="swarm")},
    }
}

# --- Celery -----------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env.bool("SWARM_CELERY_EAGER", default=False)
CELERY_TASK_EAGER_PROPAGATES = True
# acks_late + reject_on_worker_lost: a task is acknowledged once it has finished, so a worker
# killed mid-task (OOM, SIGKILL, a lost machine) leaves it unacknowledged and Redis hands it to
# another worker when the visibility timeout has passed. Tasks are idempotent for that (STYLE 4, 5).
#: Seconds an unacknowledged task waits before another worker gets it; longer than the longest task.
SWARM_CELERY_VISIBILITY_TIMEOUT = env.int("SWARM_CELERY_VISIBILITY_TIMEOUT", default=3600)
#: Seconds between a worker's sweeps for such tasks (kombu's default sweep is every 100 s).
SWARM_CELERY_RESTORE_INTERVAL = env.int("SWARM_CELERY_RESTORE_INTERVAL", default=10)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": SWARM_CELERY_VISIBILITY_TIMEOUT,
                                   "unacked_restore_interval": SWARM_CELERY_RESTORE_INTERVAL,
                                   "unacked_restore_throttle": 1}
# DatabaseScheduler alone lets two beats both send every entry; this one sends only while it holds
# a Redis lease, so a second beat started by mistake stands by (swarm/core/beat.py, docs/operations.md).
CELERY_BEAT_SCHEDULER = "swarm.core.beat:SingleLeaderDatabaseScheduler"
#: Seconds the sending beat's Redis lease lasts unless renewed; a standby beat takes over this long after it dies.
SWARM_BEAT_LEASE_SECONDS = env.float("SWARM_BEAT_LEASE_SECONDS", default=30.0)
#: Queue of the rollout engine's tasks (a dedicated worker pool can serve it; tests isolate rollouts with it).
SWARM_ROLLOUT_QUEUE = env.str("SWARM_ROLLOUT_QUEUE", default="celery")
CELERY_TASK_ROUTES = {name: {"queue": SWARM_ROLLOUT_QUEUE}
                      for name in ("drones.advance_rollout", "drones.tick_rollouts", "drones.check_payload_drift")}
CELERY_TIMEZONE = "UTC"
#: Seconds between two health sweeps of the fleet (beat task drones.check_health).
SWARM_DRONE_HEALTH_CHECK_INTERVAL = env.float("SWARM_DRONE_HEALTH_CHECK_INTERVAL", default=10.0)
#: Seconds between two samples of the fleet for the topology's timeline scrubber (beat task drones.sample_fleet).
SWARM_TOPOLOGY_SAMPLE_INTERVAL = env.float("SWARM_TOPOLOGY_SAMPLE_INTERVAL", default=60.0)
#: Seconds between beat's wakes of every unfinished rollout (agent reports wake them at once too).
SWARM_ROLLOUT_TICK_INTERVAL = env.float("SWARM_ROLLOUT_TICK_INTERVAL", default=5.0)
#: Seconds between fleet-wide payload drift checks (a changed heartbeat hash checks its drone at once).
SWARM_PAYLOAD_DRIFT_INTERVAL = env.float("SWARM_PAYLOAD_DRIFT_INTERVAL", default=60.0)
# The whole beat schedule, in one place. Every entry expires so a stopped
# worker never comes back to a pile of stale runs.
CELERY_BEAT_SCHEDULE = {
    "bundles.sweep_orphan_blobs": {
        "task": "bundles.sweep_orphan_blobs",
        "schedule": env.int("SWARM_SWEEP_INTERVAL", default=3600),
        "options": {"expires": 600},
    },
    # Marks overdue executions timed_out and kills their runtime (DESIGN §5 Executions).
    "workflows.reap_executions": {
        "task": "workflows.reap_executions",
        "schedule": env.int("SWARM_EXECUTION_REAP_INTERVAL", default=10),
        "options": {"expires": max(5, env.int("SWARM_EXECUTION_REAP_INTERVAL", default=10))},
    },
    "drones.check_health": {
        "task": "drones.check_health",
        "schedule": SWARM_DRONE_HEALTH_CHECK_INTERVAL,
        "options": {"expires": SWARM_DRONE_HEALTH_CHECK_INTERVAL},
    },
    "drones.sample_fleet": {
        "task": "drones.sample_fleet",
        "schedule": SWARM_TOPOLOGY_SAMPLE_INTERVAL,
        "options": {"expires": SWARM_TOPOLOGY_SAMPLE_INTERVAL},
    },
    # Wakes unfinished rollouts: a killed worker or a lost wake only delays one (DESIGN §5 Payloads).
    "drones.tick_rollouts": {
        "task": "drones.tick_rollouts",
        "schedule": SWARM_ROLLOUT_TICK_INTERVAL,
        "options": {"expires": SWARM_ROLLOUT_TICK_INTERVAL},
    },
    "drones.check_payload_drift": {
        "task": "drones.check_payload_drift",
        "schedule": SWARM_PAYLOAD_DRIFT_INTERVAL,
        "options": {"expires": SWARM_PAYLOAD_DRIFT_INTERVAL},
    },
    "builds.reap": {
        "task": "builds.reap",
        "schedule": env.int("SWARM_BUILD_REAP_INTERVAL", default=10),
        "options": {"expires": env.int("SWARM_BUILD_REAP_INTERVAL", default=10)},
    },
    "builds.archive_pending_logs": {
        "task": "builds.archive_pending_logs",
        "schedule": 300,
        "options": {"expires": 240},
    },
}

# --- Storage ----------------------------------------------------------------
MEDIA_ROOT = Path(env.str("SWARM_MEDIA_ROOT", default=str(VAR_DIR / "media")))
STATIC_URL = "static/"
# Static files are served by WhiteNoise straight from the finders; set
# SWARM_STATIC_ROOT to serve a collectstatic output instead.
STATIC_ROOT = env.str("SWARM_STATIC_ROOT", default="") or None
STATICFILES_DIRS = [BASE_DIR / "static"]

SWARM_S3_BUCKET = env.str("SWARM_S3_BUCKET", default="")
if SWARM_S3_BUCKET:
    BLOB_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": SWARM_S3_BUCKET,
            "endpoint_url": env.str("SWARM_S3_ENDPOINT_URL", default="") or None,
            "access_key": env.str("SWARM_S3_ACCESS_KEY", default="") or None,
            "secret_key": env.str("SWARM_S3_SECRET_KEY", default="") or None,
            "region_name": env.str("SWARM_S3_REGION", default="us-east-1"),
            "addressing_style": env.str("SWARM_S3_ADDRESSING_STYLE", default="path"),
            "signature_version": "s3v4",
            "querystring_auth": True,
            "querystring_expire": env.int("SWARM_DOWNLOAD_URL_TTL", default=900),
            "file_overwrite": True,
            "default_acl": None,
        },
    }
else:
    BLOB_STORAGE = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT), "base_url": "/media/"},
    }

STORAGES = {
    "default": BLOB_STORAGE,
    "blobs": BLOB_STORAGE,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- Bundles ----------------------------------------------------------------
SWARM_BUNDLE_MAX_BYTES = env.int("SWARM_BUNDLE_MAX_BYTES", default=2 * 1024**3)
SWARM_BUNDLE_MAX_MEMBERS = env.int("SWARM_BUNDLE_MAX_MEMBERS", default=20_000)
SWARM_BUNDLE_MAX_UNPACKED_BYTES = env.int("SWARM_BUNDLE_MAX_UNPACKED_BYTES", default=8 * 1024**3)
# Decompression bombs: refused once more than the floor is unpacked at more than RATIO unpacked bytes
# per compressed byte (zeros deflate at ~1000:1; source trees and binaries at 2-20:1).
SWARM_BUNDLE_MAX_RATIO = env.int("SWARM_BUNDLE_MAX_RATIO", default=200)
SWARM_BUNDLE_RATIO_FLOOR_BYTES = env.int("SWARM_BUNDLE_RATIO_FLOOR_BYTES", default=64 * 1024**2)
# Inspection runs on a pool of this many threads per server process (zlib releases the GIL), and one
# tenant may have at most this many uploads inspected at once (more: 429 too_many_inspections).
SWARM_BUNDLE_INSPECT_WORKERS = env.int("SWARM_BUNDLE_INSPECT_WORKERS", default=2)
SWARM_BUNDLE_INSPECTIONS_PER_TENANT = env.int("SWARM_BUNDLE_INSPECTIONS_PER_TENANT", default=2)
SWARM_DOWNLOAD_URL_TTL = env.int("SWARM_DOWNLOAD_URL_TTL", default=900)
SWARM_ORPHAN_GRACE_SECONDS = env.int("SWARM_ORPHAN_GRACE_SECONDS", default=3600)
SWARM_UPLOAD_TEMP_DIR = env.str("SWARM_UPLOAD_TEMP_DIR", default="") or None
# Streaming uploads to S3: part size (S3's minimum, 5 MiB, keeps memory low) and parallel part
# uploads; buffer memory per upload ≈ (threads + 1) × part size. See docs/cli-and-bench.md.
SWARM_S3_PART_SIZE = env.int("SWARM_S3_PART_SIZE", default=5 * 1024 * 1024)
SWARM_S3_UPLOAD_THREADS = env.int("SWARM_S3_UPLOAD_THREADS", default=4)
FILE_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
#: How deep a JSON request body may nest (swarm/core/inputs.py); deeper is a 400 `too_deep`.
SWARM_JSON_MAX_DEPTH = env.int("SWARM_JSON_MAX_DEPTH", default=64)

# --- Deployment manager (docs/deployments.md) ----------------------------------
# A catalog file larger than this is reported as a problem and not read; the tarball limits are the bundles'.
SWARM_CATALOG_MAX_FILE_BYTES = env.int("SWARM_CATALOG_MAX_FILE_BYTES", default=1024 * 1024)
# How long a scenario analysis stays in the cache (it never goes stale: snapshots are immutable).
SWARM_ANALYSIS_CACHE_SECONDS = env.int("SWARM_ANALYSIS_CACHE_SECONDS", default=7 * 24 * 3600)
# A git catalog import (POST /api/v1/catalogs {git_url, ref}) is cloned on the worker: stopped after this long;
# file:// and path URLs (the worker's own disk) only when allowed.
SWARM_CATALOG_GIT_TIMEOUT_SECONDS = env.int("SWARM_CATALOG_GIT_TIMEOUT_SECONDS", default=120)
SWARM_CATALOG_GIT_ALLOW_FILE = env.bool("SWARM_CATALOG_GIT_ALLOW_FILE", default=False)
# Seconds a package run waits on an asset URL (connect, or between two reads; ten times that in all).
SWARM_PACKAGE_ASSET_TIMEOUT = env.float("SWARM_PACKAGE_ASSET_TIMEOUT", default=30.0)
# Seconds between two looks of the package run at its builds.
SWARM_PACKAGE_POLL_SECONDS = env.float("SWARM_PACKAGE_POLL_SECONDS", default=2.0)

# --- API --------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "swarm.core.authentication.BearerTokenAuthentication",
        "swarm.core.authentication.StaffSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["swarm.core.permissions.HasScope"],
    # JSON through the strict input layer (swarm/core/inputs.py): depth, NUL and surrogates checked.
    "DEFAULT_PARSER_CLASSES": [
        "swarm.core.inputs.StrictJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # drf-spectacular's, documenting the errors of the layers below the views (400, 404, 415).
    "DEFAULT_SCHEMA_CLASS": "swarm.core.schema.SwarmAutoSchema",
    "EXCEPTION_HANDLER": "swarm.core.errors.json_exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Swarm API",
    "DESCRIPTION": "Bundles, workflows, executions, drones and builds.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # /api/docs/ works offline: Swagger UI and Redoc are served from the
    # drf-spectacular-sidecar wheel through our own static files, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {"EscalationLevelEnum": "drones.choices.EscalationLevel",
                            "BuildStateEnum": "builds.choices.BuildState",
                            "CatalogFetchStateEnum": "deployments.choices.FetchState"},
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# Times with seconds everywhere in the admin (swarm/formats/en/formats.py).
FORMAT_MODULE_PATH = ["swarm.formats"]

EMAIL_BACKEND = env.str("SWARM_EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env.str("SWARM_EMAIL_HOST", default="127.0.0.1")
EMAIL_PORT = env.int("SWARM_EMAIL_PORT", default=25)
DEFAULT_FROM_EMAIL = env.str("SWARM_EMAIL_FROM", default="swarm@localhost")

# Every process logs JSON lines to stdout and appends the same records to one capped Redis
# stream, which the admin's log page tails across replicas (swarm/core/logstream.py).
SWARM_LOG_FORMAT = env.str("SWARM_LOG_FORMAT", default="json")
SWARM_LOG_STREAM = env.bool("SWARM_LOG_STREAM", default=True)
SWARM_LOG_STREAM_LEVEL = env.str("SWARM_LOG_STREAM_LEVEL", default="INFO")
SWARM_LOG_STREAM_MAXLEN = env.int("SWARM_LOG_STREAM_MAXLEN", default=100_000)
SWARM_LOG_REDIS_URL = env.str("SWARM_LOG_REDIS_URL", default=REDIS_URL)
_log_handlers = ["console", "stream"] if SWARM_LOG_STREAM else ["console"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
                   "json": {"()": "swarm.core.logstream.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler",
                    "formatter": "plain" if SWARM_LOG_FORMAT == "plain" else "json"},
        "stream": {"class": "swarm.core.logstream.RedisStreamHandler", "level": SWARM_LOG_STREAM_LEVEL},
    },
    "root": {"handlers": _log_handlers, "level": env.str("SWARM_LOG_LEVEL", default="INFO")},
    # uvicorn's error logger does not propagate: give it the same handlers. Not its parent `uvicorn`:
    # configuring that would reset its child `uvicorn.access` (handlers cleared, propagate on), switching
    # the access log back on under `--no-access-log`, and it logs query strings — the bootstrap script's
    # `?token=<join token>` among them (docs/operations.md, "Secrets never in logs").
    "loggers": {"uvicorn.error": {"handlers": _log_handlers, "level": "INFO", "propagate": False}},
}
# Celery would replace the root logger's handlers with its own; keep the ones above.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Executions ---------------------------------------------------------------
# Fernet keys for every stored secret (swarm/core/secret_box.py, docs/security.md):
# the first encrypts, all decrypt (rotation: prepend a new key, run
# `manage.py rotate_secrets`, then drop the old one). Unset: one key derived
# from SECRET_KEY (fine for development only).
SWARM_SECRETS_KEYS = env.list("SWARM_SECRETS_KEYS", default=[])
SWARM_EXECUTION_RUNTIME = env.str("SWARM_EXECUTION_RUNTIME", default="process")
# Modules that register more execution runtimes (e.g. the drone runtime).
SWARM_EXTRA_RUNTIME_MODULES = env.list("SWARM_EXTRA_RUNTIME_MODULES", default=[])
SWARM_EXECUTION_BOOT_TIMEOUT = env.int("SWARM_EXECUTION_BOOT_TIMEOUT", default=600)
SWARM_EXECUTION_REAP_INTERVAL = env.int("SWARM_EXECUTION_REAP_INTERVAL", default=10)
# The drone runtime: a claimed execution fails `drone_lost` once its drone has not renewed it for this long
# (the agent renews with every poll, SWARM_AGENT_EXECUTION_POLL_INTERVAL, default 5 s); at most this many
# drones are offered one queued execution at a time.
SWARM_DRONE_EXECUTION_LEASE_SECONDS = env.int("SWARM_DRONE_EXECUTION_LEASE_SECONDS", default=30)
SWARM_DRONE_EXECUTION_OFFER_LIMIT = env.int("SWARM_DRONE_EXECUTION_OFFER_LIMIT", default=10)
SWARM_PROCESS_RUNTIME_DIR = env.str("SWARM_PROCESS_RUNTIME_DIR", default=str(VAR_DIR / "executions"))
SWARM_PROCESS_CACHE_DIR = env.str("SWARM_PROCESS_CACHE_DIR", default=str(VAR_DIR / "cache"))
SWARM_PROCESS_CACHE_BUDGET_MB = env.int("SWARM_PROCESS_CACHE_BUDGET_MB", default=2048)
SWARM_PROCESS_SANDBOX = env.str("SWARM_PROCESS_SANDBOX", default="auto")
# isolated: the bwrap sandbox reaches only the control plane and the bundle store; host: no restriction.
SWARM_PROCESS_NETWORK = env.str("SWARM_PROCESS_NETWORK", default="isolated")
# The microvm runtime (docs/executions.md): where the image is built, which accelerator, guest limits.
SWARM_MICROVM_IMAGE_DIR = env.str("SWARM_MICROVM_IMAGE_DIR", default=str(VAR_DIR / "microvm"))
# auto: KVM when a probe boot works on this host, else TCG; kvm or tcg force one.
SWARM_MICROVM_ACCELERATOR = env.str("SWARM_MICROVM_ACCELERATOR", default="auto")
# Guest RAM on top of the workflow's memory_mb (kernel, init, the boot itself).
SWARM_MICROVM_MEMORY_OVERHEAD_MB = env.int("SWARM_MICROVM_MEMORY_OVERHEAD_MB", default=128)
# Processes the entrypoint's user may have inside its VM (RLIMIT_NPROC): a fork bomb stops there.
SWARM_MICROVM_MAX_PROCESSES = env.int("SWARM_MICROVM_MAX_PROCESSES", default=1024)
# Share the host's bundle cache into guests read-only (9p), warmed by the supervisor before the VM starts.
SWARM_MICROVM_SHARE_CACHE = env.bool("SWARM_MICROVM_SHARE_CACHE", default=True)
SWARM_MICROVM_PROBE_TIMEOUT = env.float("SWARM_MICROVM_PROBE_TIMEOUT", default=20.0)
# --- Drones (docs/drones.md has the table) ----------------------------------
# Intervals the server hands the agents at registration.
SWARM_DRONE_HEARTBEAT_INTERVAL = env.float("SWARM_DRONE_HEARTBEAT_INTERVAL", default=15.0)
#: A reconcile rollout for one drone and payload type starts at most this often (seconds).
SWARM_PAYLOAD_RECONCILE_BACKOFF = env.float("SWARM_PAYLOAD_RECONCILE_BACKOFF", default=300.0)
SWARM_DRONE_PING_INTERVAL = env.float("SWARM_DRONE_PING_INTERVAL", default=10.0)
# A drone is stale after this many missed heartbeats, offline after the second number.
SWARM_DRONE_STALE_AFTER_MISSED = env.int("SWARM_DRONE_STALE_AFTER_MISSED", default=2)
SWARM_DRONE_OFFLINE_AFTER_MISSED = env.int("SWARM_DRONE_OFFLINE_AFTER_MISSED", default=6)
# A ping not answered within this many seconds is a missed pong; this many missed pongs is unhealthy.
SWARM_DRONE_PONG_TIMEOUT = env.float("SWARM_DRONE_PONG_TIMEOUT", default=5.0)
SWARM_DRONE_UNHEALTHY_AFTER_MISSED_PONGS = env.int("SWARM_DRONE_UNHEALTHY_AFTER_MISSED_PONGS", default=3)
# Escalation ladder: cooldown after an action at each level (seconds), doubled per
# repeated attempt at that level up to the cap; attempts per level before climbing.
SWARM_ESCALATION_COOLDOWNS = {
    1: env.float("SWARM_ESCALATION_L1_COOLDOWN", default=30.0),
    2: env.float("SWARM_ESCALATION_L2_COOLDOWN", default=30.0),
    3: env.float("SWARM_ESCALATION_L3_COOLDOWN", default=120.0),
    4: env.float("SWARM_ESCALATION_L4_COOLDOWN", default=900.0),
}
SWARM_ESCALATION_COOLDOWN_CAP = env.float("SWARM_ESCALATION_COOLDOWN_CAP", default=3600.0)
SWARM_ESCALATION_ATTEMPTS_PER_LEVEL = env.int("SWARM_ESCALATION_ATTEMPTS_PER_LEVEL", default=1)
SWARM_ESCALATION_RESET_AFTER = env.float("SWARM_ESCALATION_RESET_AFTER", default=300.0)
SWARM_ESCALATION_ALERT_EMAILS = env.list("SWARM_ESCALATION_ALERT_EMAILS", default=[])
SWARM_ESCALATION_WEBHOOK_URL = env.str("SWARM_ESCALATION_WEBHOOK_URL", default="")
SWARM_ESCALATION_HTTP_TIMEOUT = env.float("SWARM_ESCALATION_HTTP_TIMEOUT", default=10.0)
SWARM_ESCALATION_SSH_TIMEOUT = env.float("SWARM_ESCALATION_SSH_TIMEOUT", default=20.0)
# Operator console (docs/console.md): terminal limits and the topology scrubber's samples.
SWARM_TERMINAL_IDLE_TIMEOUT = env.float("SWARM_TERMINAL_IDLE_TIMEOUT", default=900.0)
SWARM_TERMINAL_MAX_SECONDS = env.float("SWARM_TERMINAL_MAX_SECONDS", default=4 * 3600.0)
SWARM_TERMINAL_MAX_SESSIONS_PER_DRONE = env.int("SWARM_TERMINAL_MAX_SESSIONS_PER_DRONE", default=4)
SWARM_TERMINAL_RECORDING_MAX_BYTES = env.int("SWARM_TERMINAL_RECORDING_MAX_BYTES", default=64 * 1024**2)
SWARM_TOPOLOGY_SAMPLE_RETENTION = env.int("SWARM_TOPOLOGY_SAMPLE_RETENTION", default=2 * 3600)

# --- Builds -----------------------------------------------------------------
# Seconds a drone has to acknowledge (PUT state running) a claimed build before it is requeued.
SWARM_BUILD_ACK_TIMEOUT = env.int("SWARM_BUILD_ACK_TIMEOUT", default=30)
# A held build's lease; any agent call renews it; the reaper fails expired ones.
SWARM_BUILD_LEASE_SECONDS = env.int("SWARM_BUILD_LEASE_SECONDS", default=60)
# How often the agent reports on a running build (keep-alive and cancel poll).
SWARM_BUILD_UPDATE_INTERVAL = env.int("SWARM_BUILD_UPDATE_INTERVAL", default=5)
# Pending longer than this → stuck_or_timeout_failure.
SWARM_BUILD_PENDING_LIMIT = env.int("SWARM_BUILD_PENDING_LIMIT", default=3600)
# The reaper fails a build this long after its own timeout (the agent enforces the timeout first).
SWARM_BUILD_TIMEOUT_GRACE = env.int("SWARM_BUILD_TIMEOUT_GRACE", default=30)
# Seconds between SIGTERM and SIGKILL when a build is cancelled.
SWARM_BUILD_CANCEL_GRACE = env.int("SWARM_BUILD_CANCEL_GRACE", default=10)
# A retried build avoids the drone that failed it for this long.
SWARM_BUILD_RETRY_AVOID_SECONDS = env.int("SWARM_BUILD_RETRY_AVOID_SECONDS", default=300)
SWARM_BUILD_LOG_MAX_BYTES = env.int("SWARM_BUILD_LOG_MAX_BYTES", default=256 * 1024**2)
SWARM_BUILD_ARTIFACT_MAX_BYTES = env.int("SWARM_BUILD_ARTIFACT_MAX_BYTES", default=5 * 1024**3)
SWARM_BUILD_REAP_INTERVAL = env.int("SWARM_BUILD_REAP_INTERVAL", default=10)
# Global webhook secret (GitHub/Bitbucket HMAC key, GitLab token); jobs may set their own.
SWARM_WEBHOOK_SECRET = env.str("SWARM_WEBHOOK_SECRET", default="")
# /metrics: django-prometheus request metrics plus the builds gauges (builds.metrics).
INSTALLED_APPS.append("django_prometheus")
MIDDLEWARE.insert(0, "django_prometheus.middleware.PrometheusBeforeMiddleware")
MIDDLEWARE.append("django_prometheus.middleware.PrometheusAfterMiddleware")
