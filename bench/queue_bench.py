"""Queue and API benchmark: seed N comparisons, serve the app with gunicorn against
PostgreSQL, drive simulated annotators over HTTP (next -> label), check invariants.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/x REDIS_URL=redis://... \\
        python bench/queue_bench.py [--comparisons 1000000]

Measurements:
1. latency at a fixed offered load (open loop): --rate labels/s (2x requests/s) from
   --open-annotators annotators; p50/p95/p99 of `next` and of `label`. Latency is
   counted from the *scheduled* send time, so a stalled server cannot hide its queue
   (no coordinated omission).
2. max sustained labels/s with --closed-annotators closed-loop annotators.
3. the same closed loop against a server running the naive query
   (bench/naive_queue.py), measured in the same run; the ratio is printed.
Then invariants in the database: labels per comparison == labels_count <= k, no
(comparison, annotator) twice, every 201 the driver saw is a stored label.

Each server is warmed first (--warmup-seconds of closed loop, not measured; its labels
count in the invariants): steady state, not worker start-up. Each phase prints the
machine's load average and the CPU time per label of the server (gunicorn master and
workers), PostgreSQL (the bench database's backends) and the driver, from /proc.

The bench creates and drops its own database (--db, default pairloop_bench) on
DATABASE_URL's server.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import naive_queue

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def db_url(base: str, name: str) -> str:
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"/{name}"))


def admin_exec(base: str, sql: str) -> None:
    with psycopg.connect(db_url(base, "postgres"), autocommit=True) as conn:
        conn.execute(sql)


# --- seeding ---------------------------------------------------------------------


def create_project(env: dict, overlap: int) -> int:
    """The bench's project, made by the ORM so that every column has the model's
    default (a raw INSERT broke each time the model gained a NOT NULL field)."""
    code = (
        "from labelapp.models import Project; print(Project.objects.create("
        f"name='bench', overlap={overlap}, lease_seconds=600, gold_rate=0,"
        " selection_strategy='random').pk)"
    )
    out = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out.strip().splitlines()[-1])


def seed(
    url: str, project_id: int, n_comparisons: int, n_users: int, overlap: int
) -> tuple[int, list]:
    """COPY prompts (n/20), responses (7 per prompt) and comparisons (20 of the 21
    pairs per prompt) into the project. Returns (project id, API tokens)."""
    t0 = time.perf_counter()
    per_prompt, n_resp = 20, 7
    n_prompts = -(-n_comparisons // per_prompt)
    rng = random.Random(0)
    now = "2026-01-01 00:00:00+00"
    tokens = [secrets.token_hex(20) for _ in range(n_users)]
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY auth_user (id, password, is_superuser, username, first_name,"
            " last_name, email, is_staff, is_active, date_joined) FROM STDIN"
        ) as cp:
            for i in range(1, n_users + 1):
                cp.write_row((i, "!", False, f"bench{i}", "", "", "", False, True, now))
        with cur.copy("COPY authtoken_token (key, created, user_id) FROM STDIN") as cp:
            for i, key in enumerate(tokens, start=1):
                cp.write_row((key, now, i))
        with cur.copy(
            "COPY labelapp_membership (role, paused, paused_reason, user_id,"
            " project_id) FROM STDIN"
        ) as cp:
            for i in range(1, n_users + 1):
                cp.write_row(("annotator", False, "", i, project_id))
        with cur.copy(
            "COPY labelapp_prompt (id, messages, content_hash, external_id, source,"
            " created_at, project_id) FROM STDIN"
        ) as cp:
            for p in range(1, n_prompts + 1):
                msg = json.dumps([{"role": "user", "content": f"Question {p}?"}])
                cp.write_row((p, msg, f"{p:064x}", "", "bench", now, project_id))
        with cur.copy(
            "COPY labelapp_response (id, text, text_hash, origin, model_ref,"
            " finish_reason, created_at, prompt_id) FROM STDIN"
        ) as cp:
            for p in range(1, n_prompts + 1):
                for r in range(n_resp):
                    rid = (p - 1) * n_resp + r + 1
                    text = f"Answer {r} to question {p}. " * 8
                    cp.write_row((rid, text, f"{rid:064x}", "import", "", "", now, p))
        pairs = [(i, j) for i in range(n_resp) for j in range(i + 1, n_resp)]
        with cur.copy(
            "COPY labelapp_comparison (origin, strategy, priority, labels_required,"
            " labels_count, status, is_gold, gold_choice, random_key, majority,"
            " both_bad_count, created_at, project_id, prompt_id, response_a_id,"
            " response_b_id) FROM STDIN"
        ) as cp:
            made = 0
            for p in range(1, n_prompts + 1):
                base = (p - 1) * n_resp + 1
                for i, j in pairs[:per_prompt]:
                    if made == n_comparisons:
                        break
                    cp.write_row(
                        ("import", "", 0, overlap, 0, "open", False, "", rng.random(),
                         "", 0, now, project_id, p, base + i, base + j)
                    )  # fmt: skip
                    made += 1
        for table in ("auth_user", "labelapp_prompt", "labelapp_response"):
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                f" (SELECT max(id) FROM {table}))"
            )
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    print(
        f"seeded {n_comparisons:,} comparisons ({n_prompts:,} prompts, "
        f"{n_prompts * n_resp:,} responses) in {time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    return project_id, tokens


# --- server ------------------------------------------------------------------------


def start_server(
    env: dict, port: int, workers: int, threads: int, config: str | None, token: str
):
    cmd = [
        PYTHON, "-m", "gunicorn", "config.wsgi", "-b", f"127.0.0.1:{port}",
        "-w", str(workers), "-k", "gthread", "--threads", str(threads),
        "--log-level", "warning",
    ]  # fmt: skip
    if config:
        cmd += ["-c", config]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            probe = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/me/",
                headers={"Authorization": f"Token {token}"},
                timeout=2,
            )
            if probe.is_success:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("gunicorn did not come up")


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU time every process on the machine spent so far (all cores, not idle or
    iowait): /proc/stat's first line."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy / os.sysconf("SC_CLK_TCK")


@dataclass
class Cpu:
    """CPU seconds so far: gunicorn (master and workers), the PostgreSQL backends
    of the bench database, the load driver processes, and the whole machine
    (other work included). Linux /proc. A backend that exits during a phase (Django
    recycles connections after CONN_MAX_AGE = 60 s) takes its CPU time with it, so
    the postgres figure is a lower bound; the machine figure is not."""

    server: float
    postgres: dict[int, float]
    driver: float
    machine: float

    @classmethod
    def now(cls, proc, url: str) -> Cpu:
        with psycopg.connect(url, autocommit=True) as conn:
            pids = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            ).fetchall()
        return cls(
            server=sum(_cpu_seconds(p) for p in [proc.pid, *_children(proc.pid)]),
            postgres={pid: _cpu_seconds(pid) for (pid,) in pids},
            driver=DRIVER_CPU[0],
            machine=_machine_busy_seconds(),
        )

    def per_label(self, later: Cpu, labels: int) -> str:
        pg = sum(t - self.postgres.get(pid, 0.0) for pid, t in later.postgres.items())
        parts = {
            "server": later.server - self.server,
            "postgres": pg,
            "driver": later.driver - self.driver,
        }
        n = max(labels, 1)
        shown = ", ".join(f"{k} {v / n * 1000:.1f}" for k, v in parts.items())
        machine = (later.machine - self.machine) / n * 1000
        return (
            f"CPU ms/label: {shown} (sum {sum(parts.values()) / n * 1000:.1f});"
            f" whole machine {machine:.1f}"
        )


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def stop_server(proc) -> None:
    """Quick shutdown: SIGINT makes gunicorn stop its workers at once, a naive
    request still running included (SIGTERM would let it finish, and a worker
    orphaned by a timeout would then query the database after it is dropped)."""
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --- driver ------------------------------------------------------------------------


@dataclass
class Stats:
    next_ms: list[float] = field(default_factory=list)
    label_ms: list[float] = field(default_factory=list)
    labels: int = 0
    empty: int = 0
    errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    cpu: float = 0.0


# CPU seconds the driver processes used so far (Cpu.now charges it per phase).
DRIVER_CPU = [0.0]


def drive(mode: str, port: int, project_id: int, tokens, seconds: float, **kw) -> Stats:
    """Run bench/queue_driver.py (a separate process: the issue's "from a separate
    process", and its CPU is measured apart from the server's) and collect its
    results."""
    cmd = [
        PYTHON, str(ROOT / "bench" / "queue_driver.py"), mode, "--port", str(port),
        "--project", str(project_id), "--seconds", str(seconds),
    ]  # fmt: skip
    for key, value in kw.items():
        cmd += [f"--{key}", str(value)]
    done = subprocess.run(
        cmd, input="\n".join(tokens), capture_output=True, text=True, check=True
    )
    stats = Stats(**json.loads(done.stdout))
    DRIVER_CPU[0] += stats.cpu
    return stats


def open_loop(port, project_id, tokens, rate: float, duration: float) -> Stats:
    """Arrivals at a fixed rate; latency from each arrival's scheduled time."""
    return drive("open", port, project_id, tokens, duration, rate=rate)


def closed_loop(port, project_id, tokens, duration: float, seed=1000):
    stats = drive("closed", port, project_id, tokens, duration, seed=seed)
    return stats, stats.labels / stats.elapsed


def pct(values: list[float], q: float) -> float:
    if len(values) < 2:
        return float("nan")
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1]


def summary(name: str, values: list[float]) -> str:
    return (
        f"{name:>5}: p50 {pct(values, 50):7.1f} ms  p95 {pct(values, 95):7.1f} ms  "
        f"p99 {pct(values, 99):7.1f} ms  (n={len(values)})"
    )


# --- invariants -----------------------------------------------------------------------


def check_invariants(url: str, labels_seen: int, unknown: int = 0) -> list[str]:
    """``unknown``: label requests whose answer never came (timed out): each may or
    may not have been stored."""
    problems = []
    with psycopg.connect(url) as conn:
        bad_count = conn.execute(
            "SELECT count(*) FROM labelapp_comparison c WHERE c.labels_count <> "
            "(SELECT count(*) FROM labelapp_label l WHERE l.comparison_id = c.id) "
            "AND c.labels_count > 0"
        ).fetchone()[0]
        over = conn.execute(
            "SELECT count(*) FROM labelapp_comparison"
            " WHERE labels_count > labels_required"
        ).fetchone()[0]
        incomplete = conn.execute(
            "SELECT count(*) FROM labelapp_comparison WHERE status = 'complete' "
            "AND labels_count <> labels_required"
        ).fetchone()[0]
        dupes = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM labelapp_label GROUP BY comparison_id,"
            " annotator_id HAVING count(*) > 1) d"
        ).fetchone()[0]
        stored = conn.execute("SELECT count(*) FROM labelapp_label").fetchone()[0]
        complete = conn.execute(
            "SELECT count(*) FROM labelapp_comparison WHERE status = 'complete'"
        ).fetchone()[0]
    print(f"invariants: {stored:,} labels stored, {complete:,} comparisons complete")
    if bad_count:
        problems.append(f"{bad_count} comparisons whose labels_count != labels")
    if over:
        problems.append(f"{over} comparisons with more than k labels")
    if incomplete:
        problems.append(f"{incomplete} complete comparisons without exactly k labels")
    if dupes:
        problems.append(f"{dupes} (comparison, annotator) pairs labelled twice")
    if not labels_seen <= stored <= labels_seen + unknown:
        problems.append(
            f"driver saw {labels_seen} labels created ({unknown} label requests"
            f" timed out), DB has {stored}"
        )
    return problems


def set_selection(url: str, project_id: int, on: bool) -> None:
    """Every regular comparison scored (random scores, as a score_comparisons job
    writes ranks) or none (the random strategy); then VACUUM ANALYZE, so the two
    states differ in the column only, not in dead tuples or statistics."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT setseed(0.17)")
        conn.execute(
            "UPDATE labelapp_project SET selection_strategy = %s::jsonb WHERE id = %s",
            ['"uncertainty"' if on else '"random"', project_id],
        )
        conn.execute(
            "UPDATE labelapp_comparison SET selection_score = "
            + ("random()" if on else "NULL")
            + " WHERE project_id = %s AND NOT is_gold",
            [project_id],
        )
        conn.execute("VACUUM ANALYZE labelapp_comparison")


def selection_phase(args, env, url, project_id, tokens, say) -> list[Stats]:
    """next's latency with selection off and on, alternated (off, on, off, on...)
    on freshly started servers with the same warm-up, so drift over the run (more
    started comparisons) favours neither."""
    p99: dict[str, list[float]] = {"off": [], "on": []}
    rates: dict[str, list[float]] = {"off": [], "on": []}
    runs: list[Stats] = []
    for i, state in enumerate(["off", "on"] * args.selection_rounds):
        set_selection(url, project_id, state == "on")
        server = start_server(
            env, args.port, args.workers, args.threads, "bench/gunicorn_bench.py",
            tokens[0],
        )  # fmt: skip
        try:
            more, _ = closed_loop(
                args.port, project_id, tokens, args.warmup_seconds, seed=300 + i
            )
            stats, rate = closed_loop(
                args.port, project_id, tokens, args.closed_seconds, seed=400 + i
            )
        finally:
            stop_server(server)
        runs += [more, stats]
        p99[state].append(pct(stats.next_ms, 99))
        rates[state].append(rate)
        say(
            f"[selection {state} {i + 1}/{2 * args.selection_rounds},"
            f" {len(tokens)} closed-loop annotators, {args.closed_seconds:g}s]"
            f"  {rate:.1f} labels/s; {summary('next', stats.next_ms)}"
        )
    on, off = statistics.mean(p99["on"]), statistics.mean(p99["off"])
    say(
        f"selection on / off: next p99 {on:.1f} / {off:.1f} ms = {on / off:.2f}x;"
        f" {statistics.mean(rates['on']):.1f} / {statistics.mean(rates['off']):.1f}"
        " labels/s"
    )
    return runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comparisons", type=int, default=1_000_000)
    ap.add_argument("--overlap", type=int, default=3)
    ap.add_argument("--rate", type=float, default=100.0, help="labels/s, open loop")
    ap.add_argument("--open-annotators", type=int, default=64)
    ap.add_argument("--open-seconds", type=float, default=30)
    ap.add_argument("--closed-annotators", type=int, default=32)
    ap.add_argument("--closed-seconds", type=float, default=30)
    ap.add_argument("--naive-seconds", type=float, default=20)
    ap.add_argument("--warmup-seconds", type=float, default=5)
    # 2 cores shared by server, PostgreSQL and driver: two processes (one per core,
    # each bound by its GIL), a few threads each to overlap database round trips.
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--db", default="pairloop_bench")
    ap.add_argument("--keep-db", action="store_true")
    ap.add_argument(
        "--analyze-after-warmup",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ANALYZE after the warm-up, as autovacuum would (default on)",
    )
    ap.add_argument(
        "--ablate",
        nargs="?",
        const="lane",
        choices=("lane", "plain"),
        help="also run the closed loop alternated against the fast lane: 'lane'"
        " (the default) with the lane off (API_FAST_LANE=0, Django and DRF), 'plain'"
        " with plain Django function views for next/label (bench/plain_views.py)",
    )
    ap.add_argument(
        "--selection",
        action="store_true",
        help="also run the closed loop alternated with selection scores off (all"
        " null: the random order) and on (every regular comparison scored, as after"
        " a score_comparisons job), comparing next's p99 in the same run",
    )
    ap.add_argument(
        "--selection-rounds",
        type=int,
        default=2,
        help="alternations of the selection comparison (each: off, then on)",
    )
    ap.add_argument(
        "--ablate-rounds",
        type=int,
        default=2,
        help="alternations of the ablation (each: the other server, then the lane)",
    )
    args = ap.parse_args()

    base_db = os.environ["DATABASE_URL"]
    url = db_url(base_db, args.db)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "0",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    admin_exec(base_db, f'DROP DATABASE IF EXISTS "{args.db}"')
    admin_exec(base_db, f'CREATE DATABASE "{args.db}"')
    try:
        subprocess.run(
            [PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True
        )
        # Disjoint annotators per phase: open, closed, ablation, naive baseline.
        n_users = args.open_annotators + 4 * args.closed_annotators
        project_id, tokens = seed(
            url,
            create_project(env, args.overlap),
            args.comparisons,
            n_users,
            args.overlap,
        )
        out = io.StringIO()

        def say(line: str) -> None:
            print(line, flush=True)
            out.write(line + "\n")

        say(
            f"server: gunicorn {args.workers} gthread workers x {args.threads}"
            f" threads; {os.cpu_count()} CPUs; {load()}"
        )
        server = start_server(
            env, args.port, args.workers, args.threads, "bench/gunicorn_bench.py",
            tokens[0],
        )  # fmt: skip
        try:
            warm, _ = closed_loop(
                args.port,
                project_id,
                tokens[: args.open_annotators],
                args.warmup_seconds,
            )
            if args.analyze_after_warmup:
                # What autovacuum does on a running system within its naptime once
                # 50 rows + 10% of a table changed: fresh statistics. The bench's
                # assignment and label tables were empty when seeded; plans made
                # from those statistics stay cached until the next ANALYZE.
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("ANALYZE")
            cpu0 = Cpu.now(server, url)
            fixed = open_loop(
                args.port, project_id, tokens[: args.open_annotators], args.rate,
                args.open_seconds,
            )  # fmt: skip
            cpu1 = Cpu.now(server, url)
            say(
                f"[fixed load {args.rate:g} labels/s, {args.open_annotators}"
                f" annotators, {args.open_seconds:g}s, latency from scheduled send;"
                f" after {args.warmup_seconds:g}s warm-up]"
            )
            say(summary("next", fixed.next_ms))
            say(summary("label", fixed.label_ms))
            say(
                f"achieved {fixed.labels / fixed.elapsed:.1f} labels/s (all arrivals"
                f" served after {fixed.elapsed:.1f}s); {load()}"
            )
            say(cpu0.per_label(cpu1, fixed.labels))
            first = args.open_annotators
            closed, rate = closed_loop(
                args.port, project_id, tokens[first : first + args.closed_annotators],
                args.closed_seconds,
            )  # fmt: skip
            cpu2 = Cpu.now(server, url)
            say(f"[max sustained, {args.closed_annotators} closed-loop annotators,"
                f" {args.closed_seconds:g}s]  {rate:.1f} labels/s")  # fmt: skip
            say(summary("next", closed.next_ms))
            say(summary("label", closed.label_ms))
            say(f"{cpu1.per_label(cpu2, closed.labels)}; {load()}")
        finally:
            stop_server(server)

        ablated: list[Stats] = []
        if args.ablate:
            # The lane against the other server (lane off: every request through
            # Django's middleware and DRF; plain: plain Django views, lane off), each
            # on a freshly started server with the same warm-up, alternated (other,
            # lane, other, lane, ...) so the database's drift over the run (more
            # started comparisons, dead tuples) does not favour either.
            first = args.open_annotators + args.closed_annotators
            ablate_tokens = tokens[first : first + args.closed_annotators]
            other = "off" if args.ablate == "lane" else "plain"
            config = {
                "off": "bench/gunicorn_bench.py",
                "plain": "bench/gunicorn_plain.py",
                "on": "bench/gunicorn_bench.py",
            }
            rates: dict[str, list[float]] = {other: [], "on": []}
            order = [other, "on"] * args.ablate_rounds
            for i, lane in enumerate(order):
                flag = "1" if lane == "on" else "0"
                server = start_server(
                    {**env, "API_FAST_LANE": flag}, args.port, args.workers,
                    args.threads, config[lane], tokens[0],
                )  # fmt: skip
                try:
                    more, _ = closed_loop(
                        args.port, project_id, ablate_tokens, args.warmup_seconds,
                        seed=100 + i,
                    )  # fmt: skip
                    cpu3 = Cpu.now(server, url)
                    stats, lane_rate = closed_loop(
                        args.port, project_id, ablate_tokens, args.closed_seconds,
                        seed=200 + i,
                    )  # fmt: skip
                    cpu4 = Cpu.now(server, url)
                finally:
                    stop_server(server)
                ablated += [more, stats]
                rates[lane].append(lane_rate)
                name = "plain views" if lane == "plain" else f"fast lane {lane}"
                say(
                    f"[ablation {i + 1}/{len(order)}: {name},"
                    f" {args.closed_annotators} closed-loop annotators,"
                    f" {args.closed_seconds:g}s]"
                    f"  {lane_rate:.1f} labels/s; next p99"
                    f" {pct(stats.next_ms, 99):.1f} ms, label p99"
                    f" {pct(stats.label_ms, 99):.1f} ms"
                )
                say(f"{cpu3.per_label(cpu4, stats.labels)}; {load()}")
            on, off = statistics.mean(rates["on"]), statistics.mean(rates[other])
            spread = ", ".join(
                f"{k}: {min(v):.1f}-{max(v):.1f}" for k, v in rates.items()
            )
            label = "fast lane on / off" if other == "off" else "fast lane / plain"
            say(
                f"{label}: {on:.1f} / {off:.1f} labels/s = {on / off:.2f}x"
                f" (spread {spread})"
            )

        if args.selection:
            first = args.open_annotators + 3 * args.closed_annotators
            sel_tokens = tokens[first : first + args.closed_annotators]
            ablated += selection_phase(args, env, url, project_id, sel_tokens, say)

        # Last: from here on the database's candidate query is the naive one.
        naive_queue.install(url)
        server = start_server(
            env, args.port, args.workers, args.threads, "bench/gunicorn_bench.py",
            tokens[0],
        )  # fmt: skip
        try:
            naive, naive_rate = closed_loop(
                args.port,
                project_id,
                tokens[-args.closed_annotators :],
                args.naive_seconds,
            )
        finally:
            stop_server(server)
        say(f"[baseline: naive next, {args.closed_annotators} closed-loop annotators,"
            f" {args.naive_seconds:g}s]  {naive_rate:.1f} labels/s")  # fmt: skip
        say(summary("next", naive.next_ms))
        if naive.labels:
            say(
                f"ratio: throughput {rate / naive_rate:.1f}x, next p50"
                f" {pct(naive.next_ms, 50) / pct(closed.next_ms, 50):.1f}x lower"
            )
        else:
            # No finite ratio: not one naive label in the whole phase.
            say(
                f"ratio: unbounded; the baseline completed no label in"
                f" {args.naive_seconds:g}s (ours: {rate:.1f} labels/s)"
            )
        if naive.errors:
            # The baseline is allowed to time out (that is the point); it is
            # reported, not counted against the invariants.
            say(
                f"baseline: {len(naive.errors)} requests failed, e.g. {naive.errors[0]}"
            )
        errors = warm.errors + fixed.errors + closed.errors
        seen = warm.labels + fixed.labels + closed.labels + naive.labels
        for stats in ablated:
            errors += stats.errors
            seen += stats.labels
        # A baseline label request that timed out in the driver may still have
        # been stored after it gave up: each such request allows one label more.
        unknown = sum(e.startswith("label: TimeoutError") for e in naive.errors)
        problems = check_invariants(url, seen, unknown)
        for p in problems + errors[:10]:
            say(f"PROBLEM: {p}")
        say("invariants: OK" if not problems and not errors else "invariants: FAILED")
        return 1 if problems or errors else 0
    finally:
        if not args.keep_db:
            admin_exec(base_db, f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
