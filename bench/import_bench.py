"""Import throughput: the import service vs a naive one-INSERT-per-row loop.

    make bench-import            (or, with DATABASE_URL/REDIS_URL set:)
    python bench/import_bench.py [--rows 100000] [--naive-rows 5000]

Generates prompts in a temporary .jsonl file, imports them with
labelapp.datasets.importing.import_files (one transaction, batched INSERT ... ON
CONFLICT DO NOTHING) and, in the same run on the same database, inserts --naive-rows of
them the naive way (Prompt.objects.create per row, autocommit). Prints rows/s for
both and the ratio. Uses a scratch database <db>_bench_import, dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._db import scratch_database


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--naive-rows", type=int, default=5_000)
    args = parser.parse_args()

    with scratch_database("bench_import"), tempfile.TemporaryDirectory() as tmp:
        from labelapp.datasets.importing import import_files
        from labelapp.models import Project, Prompt, content_hash

        path = Path(tmp) / "prompts.jsonl"
        with path.open("w") as handle:
            for i in range(args.rows):
                text = f"Generated prompt {i}: explain topic {i % 997} to a beginner."
                handle.write(json.dumps({"prompt": text, "question_id": i}) + "\n")

        project = Project.objects.create(name="bench-service")
        start = time.perf_counter()
        result = import_files(project=project, paths=[path])
        service_s = time.perf_counter() - start
        assert result.created["prompts"] == args.rows, result.created

        naive_project = Project.objects.create(name="bench-naive")
        start = time.perf_counter()
        for i in range(args.naive_rows):
            text = f"Generated prompt {i}: explain topic {i % 997} to a beginner."
            messages = [{"role": "user", "content": text}]
            Prompt.objects.create(
                project=naive_project,
                messages=messages,
                content_hash=content_hash(messages),
                external_id=str(i),
            )
        naive_s = time.perf_counter() - start

    service_rate = args.rows / service_s
    naive_rate = args.naive_rows / naive_s
    print(
        f"service: {args.rows:,} prompts in {service_s:.1f} s = {service_rate:,.0f} rows/s"
    )
    print(
        f"naive:   {args.naive_rows:,} prompts in {naive_s:.1f} s = {naive_rate:,.0f} rows/s"
    )
    print(f"ratio:   {service_rate / naive_rate:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
