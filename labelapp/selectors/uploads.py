"""The upload page's read: a preview of staged import files before anything is
written (the first lines, the detected format, the importer's first error).

The check reads every line with the importer's own reader
(labelapp.datasets.records.read_records, with the importer's limits), so a file the
preview passes is one the import accepts, line for line."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from labelapp.datasets.importing import LIMITS
from labelapp.datasets.records import (
    PairRec,
    PromptRec,
    RankingRec,
    ResponseRec,
    read_records,
)
from labelapp.errors import ImportFailed

PREVIEW_LINES = 5
PREVIEW_CHARS = 300


@dataclass
class FilePreview:
    name: str
    size: int
    records: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)
    first_lines: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def detected(self) -> str:
        """The format of most lines (a file may mix prompts and responses)."""
        if not self.formats:
            return "unknown"
        return ", ".join(f"{name} ({n})" for name, n in self.formats.items())


def record_format(obj: object) -> str:
    """A name for the line format the importer's parser picks for ``obj`` (the
    branches of labelapp.datasets.records.parse_record)."""
    if not isinstance(obj, dict):
        return "not an object"
    if "message_tree_id" in obj and isinstance(obj.get("prompt"), dict):
        return "Open-Assistant message tree (rankings)"
    if "responses" in obj:
        if obj.get("ranking") is not None:
            return "ranked responses"
        if obj.get("gold_tiers") is not None:
            return "gold responses to rank"
        return "responses to rank"
    if "chosen" in obj or "rejected" in obj:
        if "prompt" in obj or "messages" in obj:
            return "TRL preference pair"
        return "Anthropic HH pair"
    if "response_a" in obj or "response_b" in obj:
        return "pair with soft label p_a"
    if "response" in obj:
        return "prompt with a response"
    if "choices" in obj:
        return "arena-hard model answer"
    if "turns" in obj:
        return "MT-bench / arena-hard question"
    return "prompt"


def _kind(record: object) -> str:
    kinds = {
        PairRec: "pair",
        ResponseRec: "response",
        PromptRec: "prompt",
        RankingRec: "ranking",
    }
    return kinds.get(type(record), "record")


def _first_lines(path: Path) -> list[str]:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    lines: list[str] = []
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
            for line in itertools.islice(handle, PREVIEW_LINES * 4):
                if line.strip():
                    text = line.rstrip("\n")
                    if len(text) > PREVIEW_CHARS:
                        text = text[:PREVIEW_CHARS] + " …"
                    lines.append(text)
                if len(lines) >= PREVIEW_LINES:
                    break
    except (OSError, EOFError):
        pass  # read_records reports the unreadable file with its reason
    return lines


def upload_preview(*, files: list[tuple[str, Path]]) -> list[FilePreview]:
    """(shown name, staged path) of each file -> its preview; ``error`` holds the
    importer's message (with the shown name for the staged path) of the first bad
    line, if any."""
    previews = []
    for name, path in files:
        preview = FilePreview(name=name, size=path.stat().st_size)
        preview.first_lines = _first_lines(path)
        formats: dict[str, int] = {}
        for line in preview.first_lines:
            try:
                fmt = record_format(json.loads(line))
            except ValueError:
                continue
            formats[fmt] = formats.get(fmt, 0) + 1
        preview.formats = formats
        try:
            for _lineno, record in read_records(path, limits=LIMITS):
                preview.records += 1
                kind = _kind(record)
                preview.kinds[kind] = preview.kinds.get(kind, 0) + 1
        except ImportFailed as exc:
            preview.error = str(exc).replace(str(path), name)
        previews.append(preview)
    return previews
