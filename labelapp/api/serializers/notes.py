"""Label discussion notes: shape and validation (the write is
labelapp.services.notes.label_note_add)."""

from __future__ import annotations

from rest_framework import serializers

from labelapp.models import NOTE_MAX_CHARS, LabelNote

_MAX_ID = 2**63 - 1


class LabelNoteSerializer(serializers.ModelSerializer):
    """A note in a label's thread. ``body`` is raw text: render it escaped."""

    project = serializers.IntegerField(
        source="label.comparison.project_id", read_only=True
    )
    author_username = serializers.CharField(
        source="author.get_username", read_only=True
    )

    class Meta:
        model = LabelNote
        fields = [
            "id",
            "label",
            "project",
            "author",
            "author_username",
            "body",
            "created_at",
            "read_at",
        ]
        read_only_fields = fields


class LabelNoteInputSerializer(serializers.Serializer):
    label = serializers.IntegerField(min_value=1, max_value=_MAX_ID)
    body = serializers.CharField(
        max_length=NOTE_MAX_CHARS, trim_whitespace=False, help_text="Plain text."
    )

    def validate_body(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("This field may not be blank.")
        return value


class LabelNotesReadSerializer(serializers.Serializer):
    project = serializers.IntegerField(
        min_value=1, max_value=_MAX_ID, required=False, allow_null=True
    )


class MarkedSerializer(serializers.Serializer):
    marked = serializers.IntegerField()
