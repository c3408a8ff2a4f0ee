"""The dataset card (``README.md``) of an export and the command that reproduces it."""

from __future__ import annotations

import shlex
from datetime import datetime
from typing import Any

from labelapp.datasets.export_formats import ExportOptions
from labelapp.models import Project, Prompt


def command_line(project: Project, kind: str, opts: ExportOptions) -> str:
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
        "`shown_swapped` says A was displayed on the right). `displayed_choice` "
        "is the choice as the annotator saw it (`a` = the left-hand response): "
        "the letters the `rationale` uses. `strength` is null for `tie` and "
        "`both_bad`."
    ),
}


def dataset_card(
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
