"""Django configuration, seeding and the threaded WSGI server of the Apicbase sandbox."""

from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
import threading
from pathlib import Path
from socketserver import TCPServer, ThreadingMixIn
from types import TracebackType
from typing import Any
from urllib.parse import urlparse
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import django
import oauth2_provider
from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.wsgi import get_wsgi_application
from django.db import connections

from local.sandbox_switches import Switches

logger = logging.getLogger(__name__)

APPLICATION_NAME = "Apicbase OAuth Broker (local)"

# Apicbase's scopes, in Apicbase's order, with the text the consent page shows.
SCOPES = {
    "accounts": "See your user account and the libraries you belong to",
    "library": "Read and change your library: ingredients, recipes and menus",
    "inventory": "Read and change your stock: outlets, stock counts and movements",
    "procurement": "Read and change procurement: suppliers, orders and deliveries",
    "sales": "Read and change sales: points of sale, sold products and sales data",
    "media": "Read and upload images and files",
}

DATABASE_FILE = "sandbox.sqlite3"
SCHEMA_STAMP_FILE = "schema-versions.txt"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


class PortUnavailable(OSError):
    """The sandbox could not listen on the requested host and port."""


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host with socket.getfqdn, which can stall for
        # seconds on machines without DNS; the name is only used for SERVER_NAME.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()


class _QuietRequestHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        # Request lines carry states and client ids; Django logs failed requests itself.
        pass


class Sandbox:
    """The Apicbase sandbox, served from a background thread.

    Django settings are process-global, so a process can run one Sandbox, once: a second
    ``start()`` in the same process raises RuntimeError. Start more in subprocesses
    (``python -m local.sandbox``). With ``port=0`` the OS picks a free port; ``url`` tells it
    after ``start()``. Without ``data_dir`` the database goes to a temporary directory that
    ``stop()`` removes.
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        data_dir: str | Path | None = None,
        code_lifetime: int = 60,
        access_token_lifetime: int = 604800,
        test_hooks: bool = False,
        username: str = "demo",
        password: str = "demo",  # noqa: S107 (the sandbox's demo user)
        switches: Switches | None = None,
    ) -> None:
        parsed = urlparse(redirect_uri)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"redirect URI must be an absolute http(s) URL, got {redirect_uri!r}")
        if not client_id or not client_secret:
            raise ValueError("client id and client secret must not be empty")
        if code_lifetime <= 0 or access_token_lifetime <= 0:
            raise ValueError("lifetimes must be positive numbers of seconds")
        self.host = host
        self.port = port
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.code_lifetime = code_lifetime
        self.access_token_lifetime = access_token_lifetime
        self.test_hooks = test_hooks
        self.username = username
        self.password = password
        self.switches = switches or Switches()
        self._server: _ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._temporary_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Bind, configure Django, create the tables and seed, then serve in a daemon thread."""
        if settings.configured:
            raise RuntimeError(
                "Django settings are already configured in this process: "
                "run one Sandbox per process (use python -m local.sandbox for more)"
            )
        try:
            server = _ThreadingWSGIServer((self.host, self.port), _QuietRequestHandler)
        except OSError as error:
            raise PortUnavailable(error.errno, f"cannot listen on {self.host}:{self.port}: {error.strerror}") from error
        try:
            server.set_app(self._django_application())
        except BaseException:
            server.server_close()
            self._remove_temporary_dir()
            raise
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="apicbase-sandbox",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket; remove the database if it was temporary."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None
        connections.close_all()
        self._remove_temporary_dir()

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _django_application(self) -> Any:
        if self.data_dir is None:
            self._temporary_dir = Path(tempfile.mkdtemp(prefix="apicbase-sandbox-"))
            data_dir = self._temporary_dir
        else:
            data_dir = self.data_dir
            data_dir.mkdir(parents=True, exist_ok=True)
        _configure_django(
            database=data_dir / DATABASE_FILE,
            host=self.host,
            code_lifetime=self.code_lifetime,
            access_token_lifetime=self.access_token_lifetime,
            test_hooks=self.test_hooks,
            username=self.username,
            switches=self.switches,
        )
        django.setup()
        _create_schema(data_dir)
        _seed(
            client_id=self.client_id,
            client_secret=self.client_secret,
            redirect_uri=self.redirect_uri,
            username=self.username,
            password=self.password,
        )
        return get_wsgi_application()

    def _remove_temporary_dir(self) -> None:
        if self._temporary_dir is not None:
            shutil.rmtree(self._temporary_dir, ignore_errors=True)
            self._temporary_dir = None


def _configure_django(
    *,
    database: Path,
    host: str,
    code_lifetime: int,
    access_token_lifetime: int,
    test_hooks: bool,
    username: str,
    switches: Switches,
) -> None:
    settings.configure(
        DEBUG=False,
        # Random per start: sessions do not outlive the process, which is fine for a sandbox.
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS=sorted({"127.0.0.1", "localhost", host}),
        ROOT_URLCONF="local.sandbox.urls",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "oauth2_provider",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.middleware.clickjacking.XFrameOptionsMiddleware",
        ],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(database),
                # The server is threaded: WAL lets readers run beside a writer, IMMEDIATE
                # makes concurrent writers queue instead of failing with "database is locked".
                "OPTIONS": {
                    "timeout": 20,
                    "transaction_mode": "IMMEDIATE",
                    "init_command": "PRAGMA journal_mode=WAL;",
                },
            }
        },
        # Signed-cookie sessions need no session table. Own cookie names, because cookies
        # ignore ports and the broker's local server may run on the same host.
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        SESSION_COOKIE_NAME="apicbase_sandbox_session",
        CSRF_COOKIE_NAME="apicbase_sandbox_csrftoken",
        PASSWORD_HASHERS=["local.sandbox.hashers.FastPBKDF2PasswordHasher"],
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "DIRS": [str(TEMPLATES_DIR)],
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                    ]
                },
            }
        ],
        LOGIN_URL="/accounts/login/",
        LOGIN_REDIRECT_URL="/",
        USE_TZ=True,
        TIME_ZONE="UTC",
        USE_I18N=False,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        LOGGING={
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(asctime)s sandbox %(levelname)s %(name)s: %(message)s"}},
            "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
            "loggers": {
                name: {"handlers": ["stderr"], "level": "WARNING", "propagate": False}
                for name in ("django", "oauth2_provider", "oauthlib", __name__)
            },
        },
        OAUTH2_PROVIDER={
            "SCOPES": SCOPES,
            "AUTHORIZATION_CODE_EXPIRE_SECONDS": code_lifetime,
            "ACCESS_TOKEN_EXPIRE_SECONDS": access_token_lifetime,
            # Spelled out rather than left to DOT's defaults, which a future DOT may change:
            # refresh tokens never expire and rotate on every use (grace and reuse protection
            # are switches).
            "REFRESH_TOKEN_EXPIRE_SECONDS": None,
            "ROTATE_REFRESH_TOKEN": True,
            "REFRESH_TOKEN_GRACE_PERIOD_SECONDS": switches.grace_period,
            "REFRESH_TOKEN_REUSE_PROTECTION": switches.reuse_protection,
            "PKCE_REQUIRED": False,
        },
        # Tables straight from the models (syncdb) instead of replaying the migrations, which
        # takes 2.5 s of CPU on every start; _create_schema guards against version changes.
        MIGRATION_MODULES={app: None for app in ("auth", "contenttypes", "oauth2_provider")},
        SANDBOX={"test_hooks": test_hooks, "username": username, "switches": switches},
    )


def _create_schema(data_dir: Path) -> None:
    """Create the tables; start afresh if the database was made by other Django or DOT versions.

    Without migrations an existing database cannot be upgraded, and a sandbox's tokens are
    cheap to lose.
    """
    stamp = f"django {django.__version__}, django-oauth-toolkit {oauth2_provider.__version__}\n"
    stamp_file = data_dir / SCHEMA_STAMP_FILE
    database = data_dir / DATABASE_FILE
    if database.exists() and (not stamp_file.exists() or stamp_file.read_text() != stamp):
        logger.warning("database in %s was made by other versions: starting with a new one", data_dir)
        for path in data_dir.glob(DATABASE_FILE + "*"):  # with SQLite's -wal and -shm files
            path.unlink()
    call_command("migrate", interactive=False, verbosity=0, run_syncdb=True)
    stamp_file.write_text(stamp)


def _seed(*, client_id: str, client_secret: str, redirect_uri: str, username: str, password: str) -> None:
    user, _ = get_user_model().objects.get_or_create(username=username)
    user.set_password(password)
    user.save()

    # Not oauth2_provider.models: it can only be imported once Django is set up.
    application_model = apps.get_model("oauth2_provider", "Application")
    application = application_model.objects.filter(client_id=client_id).first()
    if application is None:
        application = application_model(client_id=client_id)
    application.name = APPLICATION_NAME
    application.client_type = application_model.CLIENT_CONFIDENTIAL
    application.authorization_grant_type = application_model.GRANT_AUTHORIZATION_CODE
    application.redirect_uris = redirect_uri
    application.skip_authorization = False
    # The plain secret: DOT hashes it on save, so the value given at start is the one that works.
    application.hash_client_secret = True
    application.client_secret = client_secret
    application.save()
