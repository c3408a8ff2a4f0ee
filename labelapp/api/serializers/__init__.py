"""Serializers: shape and validate; the writes themselves are services
(labelapp/services/, labelapp/queue/). One module per concern; the API and
its tests import them from here."""

from labelapp.api.serializers.annotation import (
    LabelEditInputSerializer,
    LabelInputSerializer,
    NextSerializer,
    ReviewInputSerializer,
    SkipInputSerializer,
    SubmittedLabelSerializer,
)
from labelapp.api.serializers.common import (
    AdministeredProjectField,
    SafeJSONField,
    enum_field,
)
from labelapp.api.serializers.fastpath import (
    label_input,
    next_data,
    plain_label_input,
    submitted_label_data,
)
from labelapp.api.serializers.notes import (
    LabelNoteInputSerializer,
    LabelNoteSerializer,
    LabelNotesReadSerializer,
    MarkedSerializer,
)
from labelapp.api.serializers.rankings import (
    RankingGoldInputSerializer,
    RankingItemGoldSerializer,
    RankingItemSerializer,
    RankingReviewSerializer,
    RankingSerializer,
    RankingSkipSerializer,
    RankInputSerializer,
    TiersField,
)
from labelapp.api.serializers.resources import (
    AssignmentSerializer,
    ComparisonSerializer,
    ComparisonUpdateSerializer,
    JobSerializer,
    LabelSerializer,
    MembershipSerializer,
    MeSerializer,
    MessageSerializer,
    ModelVersionSerializer,
    ProgressSerializer,
    ProjectSerializer,
    PromptSerializer,
    ResponseSerializer,
    RoundSerializer,
)
from labelapp.queue import MAX_DURATION_MS, RATIONALE_MAX_CHARS

__all__ = [
    "MAX_DURATION_MS",
    "RATIONALE_MAX_CHARS",
    "AdministeredProjectField",
    "AssignmentSerializer",
    "ComparisonSerializer",
    "ComparisonUpdateSerializer",
    "JobSerializer",
    "LabelEditInputSerializer",
    "LabelInputSerializer",
    "LabelNoteInputSerializer",
    "LabelNoteSerializer",
    "LabelNotesReadSerializer",
    "LabelSerializer",
    "MarkedSerializer",
    "MeSerializer",
    "MembershipSerializer",
    "MessageSerializer",
    "ModelVersionSerializer",
    "NextSerializer",
    "ProgressSerializer",
    "ProjectSerializer",
    "PromptSerializer",
    "RankInputSerializer",
    "RankingGoldInputSerializer",
    "RankingItemGoldSerializer",
    "RankingItemSerializer",
    "RankingReviewSerializer",
    "RankingSerializer",
    "RankingSkipSerializer",
    "ResponseSerializer",
    "ReviewInputSerializer",
    "RoundSerializer",
    "SafeJSONField",
    "SkipInputSerializer",
    "SubmittedLabelSerializer",
    "TiersField",
    "enum_field",
    "label_input",
    "next_data",
    "plain_label_input",
    "submitted_label_data",
]
