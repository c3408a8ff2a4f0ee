"""Pairloop's domain model. Every invariant the database can hold is a constraint here;
the rest (a comparison's responses belong to its prompt) is enforced in the services.
One module per concern; everything is importable from ``labelapp.models``."""

from labelapp.models.common import (
    DEFAULT_PAIR_MIX,
    MAX_MESSAGES,
    MAX_TEXT_CHARS,
    content_hash,
    default_pair_mix,
    default_selection_strategy,
    text_hash,
)
from labelapp.models.comparisons import (
    STRENGTH_LABELS,
    Assignment,
    Choice,
    Comparison,
    Label,
    displayed_choice,
)
from labelapp.models.loop import Job, ModelVersion, SFTExample
from labelapp.models.notes import NOTE_MAX_CHARS, NOTES_PER_LABEL_MAX, LabelNote
from labelapp.models.projects import Invite, Membership, Project
from labelapp.models.prompts import Prompt, Response, Round
from labelapp.models.rankings import Ranking, RankingAssignment, RankingItem

__all__ = [
    "DEFAULT_PAIR_MIX",
    "MAX_MESSAGES",
    "MAX_TEXT_CHARS",
    "NOTES_PER_LABEL_MAX",
    "NOTE_MAX_CHARS",
    "STRENGTH_LABELS",
    "Assignment",
    "Choice",
    "Comparison",
    "Invite",
    "Job",
    "Label",
    "LabelNote",
    "Membership",
    "ModelVersion",
    "Project",
    "Prompt",
    "Ranking",
    "RankingAssignment",
    "RankingItem",
    "Response",
    "Round",
    "SFTExample",
    "content_hash",
    "default_pair_mix",
    "default_selection_strategy",
    "displayed_choice",
    "text_hash",
]
