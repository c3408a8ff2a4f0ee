from django.contrib.auth import views as auth_views
from django.urls import path

from frontend import (
    dashboard,
    views,
    views_jobs,
    views_my_labels,
    views_notes,
    views_projects,
    views_rank,
    views_rank_review,
)

app_name = "frontend"
urlpatterns = [
    path("", views.project_list, name="projects"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="frontend/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("projects/<int:project_id>/compare/", views.compare, name="compare"),
    path(
        "projects/<int:project_id>/compare/next.json",
        views.compare_next,
        name="compare-next",
    ),
    path("projects/<int:project_id>/rank/", views_rank.rank, name="rank"),
    path(
        "projects/<int:project_id>/rank/next.json",
        views_rank.rank_next,
        name="rank-next",
    ),
    path("projects/<int:project_id>/jobs/", views_jobs.jobs_page, name="jobs"),
    path("projects/<int:project_id>/jobs.json", views_jobs.jobs_json, name="jobs-json"),
    path(
        "projects/<int:project_id>/jobs/start/<str:kind>/",
        views_jobs.jobs_start,
        name="jobs-start",
    ),
    path(
        "projects/<int:project_id>/jobs/<int:job_id>/retry/",
        views_jobs.jobs_retry,
        name="jobs-retry",
    ),
]

urlpatterns += [
    path("projects/<int:project_id>/review/", dashboard.review, name="review"),
    path(
        "projects/<int:project_id>/review/bulk-accept/",
        dashboard.review_bulk_accept,
        name="review-bulk-accept",
    ),
    path(
        "projects/<int:project_id>/review/labels/<int:label_id>/",
        dashboard.review_label,
        name="review-label",
    ),
    path(
        "projects/<int:project_id>/review/comparisons/<int:comparison_id>/gold/",
        dashboard.review_gold,
        name="review-gold",
    ),
    path("projects/<int:project_id>/quality/", dashboard.quality_page, name="quality"),
    path(
        "projects/<int:project_id>/quality/pause-flagged/",
        dashboard.quality_pause_flagged,
        name="quality-pause-flagged",
    ),
    path(
        "projects/<int:project_id>/plots/<slug:name>.svg",
        dashboard.plot,
        name="plot",
    ),
    path("projects/<int:project_id>/exports/", dashboard.exports, name="exports"),
    path(
        "projects/<int:project_id>/policy-versions/<int:version>.zip",
        views_jobs.policy_download,
        name="policy-download",
    ),
    path(
        "projects/<int:project_id>/exports/<int:job_id>/<str:filename>",
        dashboard.export_download,
        name="export-download",
    ),
]

# Project settings, members, invites and data upload (issue 18).
urlpatterns += [
    path("projects/new/", views_projects.project_new, name="project-new"),
    path("markdown-preview/", views_projects.markdown_preview, name="markdown-preview"),
    path(
        "projects/<int:project_id>/settings/",
        views_projects.project_settings,
        name="project-settings",
    ),
    path(
        "projects/<int:project_id>/members/",
        views_projects.members_page,
        name="members",
    ),
    path(
        "projects/<int:project_id>/members/add/",
        views_projects.member_add,
        name="member-add",
    ),
    path(
        "projects/<int:project_id>/members/<int:membership_id>/role/",
        views_projects.member_role,
        name="member-role",
    ),
    path(
        "projects/<int:project_id>/members/<int:membership_id>/remove/",
        views_projects.member_remove,
        name="member-remove",
    ),
    path(
        "projects/<int:project_id>/invites/",
        views_projects.invite_new,
        name="invite-new",
    ),
    path(
        "projects/<int:project_id>/invites/<int:invite_id>/revoke/",
        views_projects.invite_revoke,
        name="invite-revoke",
    ),
    path("invite/<str:token>/", views_projects.invite_accept, name="invite"),
    path(
        "projects/<int:project_id>/upload/",
        views_projects.upload_page,
        name="upload",
    ),
    path(
        "projects/<int:project_id>/upload/<str:staging_id>/",
        views_projects.upload_preview_page,
        name="upload-preview",
    ),
]

# Label discussion notes (issue 18 item 6).
urlpatterns += [
    path(
        "projects/<int:project_id>/review/labels/<int:label_id>/notes/",
        views_notes.review_label_note,
        name="review-label-note",
    ),
    path("projects/<int:project_id>/notes/", views_notes.my_notes, name="my-notes"),
    path(
        "projects/<int:project_id>/notes/<int:label_id>/reply/",
        views_notes.my_notes_reply,
        name="my-notes-reply",
    ),
]

# Annotator comforts: undo the last label, my recent labels with edit (issue 18).
urlpatterns += [
    path(
        "projects/<int:project_id>/compare/undo.json",
        views_my_labels.compare_undo,
        name="compare-undo",
    ),
    path(
        "projects/<int:project_id>/my-labels/",
        views_my_labels.my_labels,
        name="my-labels",
    ),
    path(
        "projects/<int:project_id>/my-labels/<int:label_id>/edit/",
        views_my_labels.my_label_edit,
        name="my-label-edit",
    ),
    path(
        "projects/<int:project_id>/my-labels/<int:label_id>/undo/",
        views_my_labels.my_label_undo,
        name="my-label-undo",
    ),
]

# Ranking review and gold ranking items in the app (issue 18 item 4).
urlpatterns += [
    path(
        "projects/<int:project_id>/review/rankings/",
        views_rank_review.rank_review_list,
        name="rank-review",
    ),
    path(
        "projects/<int:project_id>/review/rankings/<int:ranking_id>/",
        views_rank_review.rank_review_detail,
        name="rank-review-detail",
    ),
    path(
        "projects/<int:project_id>/review/rankings/<int:ranking_id>/review/",
        views_rank_review.rank_review_decide,
        name="rank-review-decide",
    ),
    path(
        "projects/<int:project_id>/review/rankings/<int:ranking_id>/gold/",
        views_rank_review.rank_review_gold,
        name="rank-review-gold",
    ),
]
