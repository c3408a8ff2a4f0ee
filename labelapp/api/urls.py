from django.urls import path
from rest_framework.routers import DefaultRouter

from labelapp.api import views, views_labels, views_notes, views_rankings

app_name = "api"

router = DefaultRouter()
router.register("projects", views.ProjectViewSet, basename="project")
router.register("prompts", views.PromptViewSet, basename="prompt")
router.register("responses", views.ResponseViewSet, basename="response")
router.register("comparisons", views.ComparisonViewSet, basename="comparison")
router.register("labels", views_labels.LabelViewSet, basename="label")
router.register("assignments", views.AssignmentViewSet, basename="assignment")
router.register("model-versions", views.ModelVersionViewSet, basename="modelversion")
router.register("rounds", views.RoundViewSet, basename="round")
router.register("jobs", views.JobViewSet, basename="job")
router.register(
    "ranking-items", views_rankings.RankingItemViewSet, basename="rankingitem"
)
router.register("rankings", views_rankings.RankingViewSet, basename="ranking")
router.register("label-notes", views_notes.LabelNoteViewSet, basename="labelnote")

urlpatterns = [
    path("me/", views.MeView.as_view(), name="me"),
    *router.urls,
]
