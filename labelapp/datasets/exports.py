"""Dataset exports: preference pairs, SFT examples and raw labels, as JSONL or Parquet.

``export_run`` is the one entry point (the ``export`` management command and the
Celery task both call it). An export is a folder
``ARTIFACTS_DIR/exports/<project>-<kind>-<timestamp>/`` holding the data file, a
dataset card (``README.md``) and ``manifest.json`` (the same numbers, for programs).
It is built in a hidden temporary folder next to its destination and renamed into
place, so a reader never sees half an export and a crashed export leaves no folder
that looks finished.

Rows stream from the database with ``.iterator(chunk_size=...)`` and are written as
they arrive (Parquet in row groups of one chunk), so memory stays bounded by the chunk
size, not by the project size.

Preference pairs follow TRL's preference format: ``prompt``, ``chosen``, ``rejected``
either as conversations (lists of ``{role, content}``; the default) or as plain
strings. Their aggregates are recomputed from the labels at export time, counting
accepted and pending labels and never rejected ones, so an export is correct even
while the stored ``Comparison`` aggregates are being refreshed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings
from django.contrib.postgres.aggregates import ArrayAgg
from django.db.models import Q
from django.utils.text import slugify

from labelapp import quality
from labelapp.aggregation import Aggregate, aggregate_labels
from labelapp.errors import NotFound, ValidationFailed
from labelapp.models import Comparison, Label, Project, Prompt, SFTExample

Kind = Literal["preferences", "sft", "labels"]
Format = Literal["jsonl", "parquet"]
KINDS: tuple[str, ...] = ("preferences", "sft", "labels")
FORMATS: tuple[str, ...] = ("jsonl", "parquet")
ProgressFn = Callable[[float, str], None]

NOT_REJECTED = ~Q(labels__review_state=Label.ReviewState.REJECTED)


def _labels_array(column: str) -> ArrayAgg:
    """One column of a comparison's non-rejected labels, as an array. Every such
    array has the same filter and order, so their elements line up label by label.
    The negated filter also passes the all-NULL row that the LEFT JOIN gives a
    comparison without labels, so that row is excluded by name."""
    return ArrayAgg(
        f"labels__{column}",
        filter=Q(labels__id__isnull=False) & NOT_REJECTED,
        order_by="labels__id",
        default=[],
    )


@dataclass
class ExportOptions:
    """What to export and how. ``from_mapping`` accepts the JSON params of a Job."""

    format: str = "jsonl"
    # Conversations (TRL's conversational format) or plain strings.
    messages: bool = True
    # Preferences: keep pairs whose label agreement is at least this (0..1).
    min_agreement: float | None = None
    # Preferences: keep pairs with at least this many non-rejected labels.
    min_labels: int = 1
    # Labels: annotator usernames instead of stable pseudonyms.
    reveal_annotators: bool = False
    # SFT: only these round numbers (all rounds when empty).
    rounds: list[int] = field(default_factory=list)
    # Parent folder of the export folder; ARTIFACTS_DIR/exports when unset.
    out_dir: str | None = None
    chunk_size: int = 2000
    # Recorded in the card as the generating command (the CLI fills it in).
    command: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ExportOptions:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValidationFailed(
                f"unknown export options: {', '.join(sorted(unknown))}"
            )
        return cls(**dict(data))

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise ValidationFailed(f"format must be one of {', '.join(FORMATS)}")
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 1:
            raise ValidationFailed("min_agreement must be between 0 and 1")
        if self.min_labels < 1:
            raise ValidationFailed("min_labels must be at least 1")
        if self.chunk_size < 1:
            raise ValidationFailed("chunk_size must be at least 1")


class _Writer(Protocol):
    def write(self, rows: list[dict[str, Any]]) -> None: ...
    def close(self) -> None: ...


# ---------------------------------------------------------------------------
# Helpers (pure)
# ---------------------------------------------------------------------------


def annotator_pseudonym(user_id: int, *, secret: str | None = None) -> str:
    """Stable pseudonym for an annotator: HMAC-SHA256 of the user id keyed with the
    SECRET_KEY. Stable across exports (so labels of one person line up), not
    reversible without the key, and different between deployments."""
    key = (secret if secret is not None else settings.SECRET_KEY).encode("utf-8")
    digest = hmac.new(key, f"pairloop-annotator:{user_id}".encode(), hashlib.sha256)
    return "ann-" + digest.hexdigest()[:12]


def clean_messages(messages: Any) -> list[dict[str, str]]:
    """Messages reduced to ``{role, content}`` strings, the shape TRL expects; extra
    keys would become sparse columns that differ from file to file."""
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]


def messages_to_text(messages: list[dict[str, str]]) -> str:
    """A conversation as one string. A single user turn is its content as is (the
    common case); longer conversations are written as ``Role: content`` blocks."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def strength_margin(p_a: float, mean_strength: float | None) -> float:
    """Margin for TRL's ``margin`` column, in [0, 1].

    Llama 2 adds a margin by rating: 0 for "negligibly better", up to 1 for
    "significantly better"; here (mean strength − 1) / 3. It is scaled by how
    one-sided the labels are, |2·p_a − 1|, so split pairs get no margin even when
    every annotator felt strongly (in opposite directions)."""
    if mean_strength is None:
        return 0.0
    return round(max(0.0, (mean_strength - 1.0) / 3.0) * abs(2.0 * p_a - 1.0), 6)


# ---------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------


class _JsonlWriter:
    def __init__(self, path: Path) -> None:
        self._fh = path.open("w", encoding="utf-8")

    def write(self, rows: list[dict[str, Any]]) -> None:
        self._fh.writelines(
            json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n"
            for r in rows
        )

    def close(self) -> None:
        self._fh.close()


class _ParquetWriter:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._schema = schema
        self._writer = pq.ParquetWriter(path, schema, compression="zstd")

    def write(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._writer.write_table(pa.Table.from_pylist(rows, schema=self._schema))

    def close(self) -> None:
        self._writer.close()


def _open_writer(
    folder: Path, stem: str, fmt: str, schema: pa.Schema
) -> tuple[_Writer, Path]:
    path = folder / f"{stem}.{fmt}"
    if fmt == "parquet":
        return _ParquetWriter(path, schema), path
    return _JsonlWriter(path), path


MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def _preference_schema(messages: bool) -> pa.Schema:
    text = MESSAGES if messages else pa.string()
    return pa.schema(
        [
            ("prompt", text),
            ("chosen", text),
            ("rejected", text),
            ("p_a", pa.float64()),
            ("p_chosen", pa.float64()),
            ("agreement", pa.float64()),
            ("n_labels", pa.int32()),
            ("strength", pa.float64()),
            ("margin", pa.float64()),
            ("comparison_id", pa.int64()),
            ("prompt_id", pa.int64()),
            ("chosen_id", pa.int64()),
            ("rejected_id", pa.int64()),
            ("chosen_is_a", pa.bool_()),
            ("round", pa.int32()),
            ("strategy", pa.string()),
            ("origin", pa.string()),
        ]
    )


def _sft_schema(messages: bool) -> pa.Schema:
    head = (
        [("messages", MESSAGES)]
        if messages
        else [("prompt", pa.string()), ("completion", pa.string())]
    )
    return pa.schema(
        [
            *head,
            ("reward", pa.float64()),
            ("round", pa.int32()),
            ("prompt_id", pa.int64()),
            ("response_id", pa.int64()),
        ]
    )


LABEL_SCHEMA = pa.schema(
    [
        ("label_id", pa.int64()),
        ("comparison_id", pa.int64()),
        ("prompt_id", pa.int64()),
        ("response_a_id", pa.int64()),
        ("response_b_id", pa.int64()),
        ("annotator", pa.string()),
        ("choice", pa.string()),
        ("strength", pa.int32()),
        ("p_a", pa.float64()),
        ("shown_swapped", pa.bool_()),
        ("duration_ms", pa.int64()),
        ("rationale", pa.string()),
        ("review_state", pa.string()),
        ("source", pa.string()),
        ("is_gold", pa.bool_()),
        ("round", pa.int32()),
        ("created_at", pa.string()),
    ]
)


# ---------------------------------------------------------------------------
# Row producers (selectors: read the DB, yield chunks of plain rows)
# ---------------------------------------------------------------------------


def _chunks(it: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in it:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _preference_rows(
    project: Project, opts: ExportOptions, counts: dict[str, int], progress: ProgressFn
) -> Iterator[list[dict[str, Any]]]:
    """Chunks of preference rows. Each comparison's labels are gathered in SQL
    (array_agg, GROUP BY the comparison only, so no text is grouped) and aggregated
    by ``aggregate_labels``, the same function as the stored aggregates; prompts and
    response texts are then fetched per chunk, so no query ever holds more than one
    chunk of text."""

    agg = (
        Comparison.objects.filter(project=project)
        .annotate(
            choices=_labels_array("choice"),
            p_as=_labels_array("p_a"),
            strengths=_labels_array("strength"),
        )
        .order_by("id")
        .values_list("id", "choices", "p_as", "strengths")
    )
    total = Comparison.objects.filter(project=project).count()
    seen = 0
    for chunk in _chunks(agg.iterator(chunk_size=opts.chunk_size), opts.chunk_size):
        seen += len(chunk)
        kept: list[tuple[int, Aggregate]] = []
        for cid, choices, p_as, strengths in chunk:
            a = aggregate_labels(zip(choices, p_as, strengths, strict=True))
            if a.n_labels == 0:
                counts["no_labels"] += 1
            elif a.p_a is None:
                counts["all_both_bad"] += 1
            elif abs(a.p_a - 0.5) < 1e-9:
                counts["ties"] += 1
            elif a.n_labels < opts.min_labels:
                counts["below_min_labels"] += 1
            elif (
                opts.min_agreement is not None
                and (a.agreement or 0) < opts.min_agreement
            ):
                counts["below_min_agreement"] += 1
            else:
                kept.append((cid, a))
        rows = _preference_texts(kept, opts.messages)
        counts["rows"] += len(rows)
        progress(seen / total if total else 1.0, f"{seen}/{total} comparisons read")
        yield rows


def _preference_texts(
    kept: list[tuple[int, Aggregate]], messages: bool
) -> list[dict[str, Any]]:
    if not kept:
        return []
    info = {
        r["id"]: r
        for r in Comparison.objects.filter(id__in=[cid for cid, _ in kept]).values(
            "id",
            "prompt_id",
            "prompt__messages",
            "response_a_id",
            "response_b_id",
            "response_a__text",
            "response_b__text",
            "round__number",
            "strategy",
            "origin",
        )
    }
    rows = []
    for cid, a in kept:
        c = info[cid]
        assert a.p_a is not None
        chosen_is_a = a.p_a > 0.5
        side = ("a", "b") if chosen_is_a else ("b", "a")
        chosen_text = c[f"response_{side[0]}__text"]
        rejected_text = c[f"response_{side[1]}__text"]
        prompt = clean_messages(c["prompt__messages"])
        if messages:
            prompt_v: Any = prompt
            chosen_v: Any = [{"role": "assistant", "content": chosen_text}]
            rejected_v: Any = [{"role": "assistant", "content": rejected_text}]
        else:
            prompt_v, chosen_v, rejected_v = (
                messages_to_text(prompt),
                chosen_text,
                rejected_text,
            )
        rows.append(
            {
                "prompt": prompt_v,
                "chosen": chosen_v,
                "rejected": rejected_v,
                "p_a": a.p_a,
                "p_chosen": a.p_a if chosen_is_a else 1.0 - a.p_a,
                "agreement": a.agreement,
                "n_labels": a.n_labels,
                "strength": a.mean_strength,
                "margin": strength_margin(a.p_a, a.mean_strength),
                "comparison_id": cid,
                "prompt_id": c["prompt_id"],
                "chosen_id": c[f"response_{side[0]}_id"],
                "rejected_id": c[f"response_{side[1]}_id"],
                "chosen_is_a": chosen_is_a,
                "round": c["round__number"],
                "strategy": c["strategy"],
                "origin": c["origin"],
            }
        )
    return rows


def _sft_rows(
    project: Project, opts: ExportOptions, counts: dict[str, int], progress: ProgressFn
) -> Iterator[list[dict[str, Any]]]:
    qs = SFTExample.objects.filter(round__project=project)
    if opts.rounds:
        qs = qs.filter(round__number__in=opts.rounds)
    total = qs.count()
    rows_qs = qs.order_by("round__number", "prompt_id").values_list(
        "prompt_id",
        "prompt__messages",
        "response_id",
        "response__text",
        "reward",
        "round__number",
    )
    seen = 0
    for chunk in _chunks(rows_qs.iterator(chunk_size=opts.chunk_size), opts.chunk_size):
        rows = []
        for prompt_id, msgs, response_id, text, reward, rnd in chunk:
            prompt = clean_messages(msgs)
            head: dict[str, Any] = (
                {"messages": [*prompt, {"role": "assistant", "content": text}]}
                if opts.messages
                else {"prompt": messages_to_text(prompt), "completion": text}
            )
            rows.append(
                {
                    **head,
                    "reward": reward,
                    "round": rnd,
                    "prompt_id": prompt_id,
                    "response_id": response_id,
                }
            )
        seen += len(chunk)
        counts["rows"] += len(rows)
        progress(seen / total if total else 1.0, f"{seen}/{total} SFT examples read")
        yield rows


def _label_rows(
    project: Project, opts: ExportOptions, counts: dict[str, int], progress: ProgressFn
) -> Iterator[list[dict[str, Any]]]:
    """Every label, rejected ones included (``review_state`` says which)."""
    qs = Label.objects.filter(comparison__project=project)
    total = qs.count()
    rows_qs = qs.order_by("id").values_list(
        "id",
        "comparison_id",
        "comparison__prompt_id",
        "comparison__response_a_id",
        "comparison__response_b_id",
        "annotator_id",
        "annotator__username",
        "choice",
        "strength",
        "p_a",
        "shown_swapped",
        "duration_ms",
        "rationale",
        "review_state",
        "source",
        "comparison__is_gold",
        "comparison__round__number",
        "created_at",
    )
    # One HMAC per annotator, not per label.
    names: dict[int, str] = {}
    seen = 0
    for chunk in _chunks(rows_qs.iterator(chunk_size=opts.chunk_size), opts.chunk_size):
        rows = []
        for (
            lid, cid, pid, ra, rb, uid, username, choice, strength, p_a, swapped,
            dur, rationale, state, source, is_gold, rnd, created,
        ) in chunk:  # fmt: skip
            if uid not in names:
                names[uid] = (
                    username if opts.reveal_annotators else annotator_pseudonym(uid)
                )
            rows.append(
                {
                    "label_id": lid,
                    "comparison_id": cid,
                    "prompt_id": pid,
                    "response_a_id": ra,
                    "response_b_id": rb,
                    "annotator": names[uid],
                    "choice": choice,
                    "strength": strength,
                    "p_a": p_a,
                    "shown_swapped": swapped,
                    "duration_ms": dur,
                    "rationale": rationale,
                    "review_state": state,
                    "source": source,
                    "is_gold": is_gold,
                    "round": rnd,
                    "created_at": created.isoformat(),
                }
            )
        seen += len(chunk)
        counts["rows"] += len(rows)
        progress(seen / total if total else 1.0, f"{seen}/{total} labels read")
        yield rows
    counts["annotators"] = len(names)


# ---------------------------------------------------------------------------
# Dataset card
# ---------------------------------------------------------------------------


def _command_line(project: Project, kind: str, opts: ExportOptions) -> str:
    args = [
        "python",
        "manage.py",
        "export",
        "--project",
        str(project.pk),
        "--kind",
        kind,
    ]
    args += ["--format", opts.format]
    if kind != "labels":
        args.append("--messages" if opts.messages else "--strings")
    if opts.min_agreement is not None:
        args += ["--min-agreement", str(opts.min_agreement)]
    if opts.min_labels != 1:
        args += ["--min-labels", str(opts.min_labels)]
    for r in opts.rounds:
        args += ["--round", str(r)]
    if opts.reveal_annotators:
        args.append("--reveal-annotators")
    return shlex.join(args)


_DESCRIPTIONS = {
    "preferences": (
        "Human preference pairs in TRL's preference format (`prompt`, `chosen`, "
        "`rejected`). `chosen` is the response humans preferred on average "
        "(`p_a` > 0.5 for A). Extra columns: `p_a` (soft label for the canonical A "
        "side: mean over labels of 1 for A, 0 for B, ½ for a tie), `p_chosen`, "
        "`agreement` (share of labels equal to the plurality choice), `n_labels`, "
        "`strength` (mean Llama 2 strength, 1–4, of the A/B labels), `margin` "
        "(TRL's margin column: (strength − 1)/3 × |2·p_a − 1|)."
    ),
    "sft": (
        "Supervised fine-tuning data: for each prompt of each rejection-sampling "
        "round, the response the reward model scored best (`reward`)."
    ),
    "labels": (
        "Every individual label, rejected ones included (see `review_state`), in "
        "canonical orientation (A = the response with the lower id; "
        "`shown_swapped` says A was displayed on the right)."
    ),
}


def _card(
    *,
    project: Project,
    kind: str,
    opts: ExportOptions,
    counts: dict[str, int],
    agreement: dict[str, Any],
    data_file: str,
    created: datetime,
    command: str,
) -> str:
    sources = sorted(
        s
        for s in Prompt.objects.filter(project=project)
        .values_list("source", flat=True)
        .distinct()
        if s
    )

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    lines = [
        f"# {project.name}: {kind} export",
        "",
        _DESCRIPTIONS[kind],
        "",
        f"- file: `{data_file}` ({opts.format}"
        + (
            ""
            if kind == "labels"
            else (", conversational messages" if opts.messages else ", plain strings")
        )
        + ")",
        f"- rows: {counts['rows']}",
        f"- created: {created.isoformat()}",
        f"- project: {project.name} (id {project.pk})",
        "",
        "## Filters and exclusions",
        "",
    ]
    if kind == "preferences":
        min_agreement = "none" if opts.min_agreement is None else opts.min_agreement
        lines += [
            "- labels counted: accepted and pending; rejected labels are ignored",
            f"- min agreement: {min_agreement}",
            f"- min labels per pair: {opts.min_labels}",
            f"- excluded, ties (p_a = 0.5): {counts['ties']}",
            f'- excluded, every label "both bad": {counts["all_both_bad"]}',
            f"- excluded, below min agreement: {counts['below_min_agreement']}",
            f"- excluded, below min labels: {counts['below_min_labels']}",
            f"- not yet labelled (skipped): {counts['no_labels']}",
        ]
    elif kind == "sft":
        lines.append(
            f"- rounds: {', '.join(map(str, opts.rounds)) if opts.rounds else 'all'}"
        )
    else:
        lines += [
            f"- annotators: {counts.get('annotators', 0)}, "
            + (
                "shown by username (revealed on request)"
                if opts.reveal_annotators
                else "pseudonymous (`ann-` + HMAC of the user id with the "
                "deployment's secret key: stable across exports, not reversible)"
            ),
        ]
    lines += [
        "",
        "## Agreement",
        "",
        "Krippendorff's alpha (nominal; a, b, tie and both-bad as categories; "
        "rejected labels left out) over the project's labels:",
        "",
        f"- alpha: {fmt(agreement['alpha'])}",
        f"- pairwise percent agreement: {fmt(agreement['pairwise_agreement'])}",
        f"- comparisons with labels: {agreement['n_units']} "
        f"({agreement['n_multi_units']} with two or more), labels: "
        f"{agreement['n_labels']}, annotators: {agreement['n_annotators']}",
    ]
    for r in agreement["rounds"]:
        if r["round"] is not None:
            lines.append(
                f"- round {r['round']}: alpha {fmt(r['alpha'])}, pairwise "
                f"{fmt(r['pairwise_agreement'])} over {r['n_units']} comparisons"
            )
    lines += [
        "",
        "## License",
        "",
        "Prompts and responses keep the licenses of their sources"
        + (f" ({', '.join(sources)})" if sources else "")
        + "; check them before redistributing. Labels and rationales were written "
        "by this project's annotators; share them only as your agreement with them "
        "allows.",
        "",
        "## How this was generated",
        "",
        "```",
        command,
        "```",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Service
# ---------------------------------------------------------------------------

_PRODUCERS = {
    "preferences": (_preference_rows, _preference_schema),
    "sft": (_sft_rows, _sft_schema),
    "labels": (_label_rows, lambda _messages: LABEL_SCHEMA),
}


def export_run(
    *,
    project: Project | int,
    kind: str,
    options: ExportOptions | Mapping[str, Any] | None = None,
    progress: ProgressFn | None = None,
    now: Callable[[], datetime] | None = None,
) -> Path:
    """Write one export and return its folder.

    ``progress(fraction, message)`` is called after every chunk (the Celery task
    forwards it to the Job row). ``now`` is injectable so tests control the folder
    name. Raises ``ValidationFailed`` for bad options and ``NotFound`` for a missing
    project."""
    if isinstance(project, int):
        try:
            project = Project.objects.get(pk=project)
        except Project.DoesNotExist:
            raise NotFound(f"project {project} does not exist") from None
    if kind not in KINDS:
        raise ValidationFailed(f"kind must be one of {', '.join(KINDS)}")
    opts = (
        options
        if isinstance(options, ExportOptions)
        else ExportOptions.from_mapping(options or {})
    )
    opts.validate()
    report = progress or (lambda _f, _m: None)
    created = (now or (lambda: datetime.now(UTC)))()

    parent = (
        Path(opts.out_dir) if opts.out_dir else Path(settings.ARTIFACTS_DIR) / "exports"
    )
    parent.mkdir(parents=True, exist_ok=True)
    stem = slugify(project.name) or f"project-{project.pk}"
    name = f"{stem}-{kind}-{created.strftime('%Y%m%dT%H%M%SZ')}"
    # Hidden temp folder in the same parent: the final rename stays on one
    # filesystem, so it is atomic.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent))
    try:
        produce, schema_for = _PRODUCERS[kind]
        counts: dict[str, int] = dict.fromkeys(
            (
                "rows",
                "ties",
                "all_both_bad",
                "below_min_agreement",
                "below_min_labels",
                "no_labels",
            ),
            0,
        )
        report(0.0, f"exporting {kind}")
        writer, data_path = _open_writer(
            tmp, kind, opts.format, schema_for(opts.messages)
        )
        try:
            for rows in produce(
                project, opts, counts, lambda f, m: report(0.95 * f, m)
            ):
                writer.write(rows)
        finally:
            writer.close()
        agreement = quality.project_agreement(project=project)
        command = opts.command or _command_line(project, kind, opts)
        (tmp / "README.md").write_text(
            _card(
                project=project,
                kind=kind,
                opts=opts,
                counts=counts,
                agreement=agreement,
                data_file=data_path.name,
                created=created,
                command=command,
            ),
            encoding="utf-8",
        )
        manifest = {
            "project": project.pk,
            "kind": kind,
            "file": data_path.name,
            "created": created.isoformat(),
            "counts": counts,
            "options": asdict(opts),
            "alpha": agreement["alpha"],
            "pairwise_agreement": agreement["pairwise_agreement"],
            "command": command,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; exports are shared artifacts
        final = parent / name
        suffix = 1
        # Two exports in the same second: never overwrite a finished export.
        while True:
            try:
                os.rename(tmp, final)
                break
            except OSError:
                if not final.exists():
                    raise
                suffix += 1
                final = parent / f"{name}-{suffix}"
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report(1.0, f"wrote {counts['rows']} rows to {final}")
    return final
