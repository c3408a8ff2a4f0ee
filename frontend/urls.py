from django.contrib.auth import views as auth_views
from django.urls import path

from frontend import views, views_jobs

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
