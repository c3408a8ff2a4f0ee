from django.contrib import admin
from django.urls import include, path
from django.views import defaults
from drf_spectacular.renderers import OpenApiYamlRenderer
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.negotiation import DefaultContentNegotiation

from frontend.middleware import CSP
from labelapp.api.errors import json_error


class _PlainYamlRenderer(OpenApiYamlRenderer):
    """The schema as text/plain, which a browser shows instead of downloading."""

    media_type = "text/plain"
    format = "txt"


class _SchemaNegotiation(DefaultContentNegotiation):
    def select_renderer(self, request, renderers, format_suffix=None):
        # A browser (Accept: text/html...) asking without ?format= gets readable
        # YAML; API clients and tools keep the OpenAPI media types.
        # ?format= wins whatever the Accept header says (a browser's never names
        # the OpenAPI types).
        wanted = format_suffix or request.query_params.get("format")
        if wanted:
            for renderer in renderers:
                if renderer.format == wanted:
                    return renderer, renderer.media_type
        elif "text/html" in request.META.get("HTTP_ACCEPT", ""):
            for renderer in renderers:
                if isinstance(renderer, _PlainYamlRenderer):
                    return renderer, "text/plain; charset=utf-8"
        return super().select_renderer(request, renderers, format_suffix)


class SchemaView(SpectacularAPIView):
    renderer_classes = [*SpectacularAPIView.renderer_classes, _PlainYamlRenderer]
    content_negotiation_class = _SchemaNegotiation


class DocsView(SpectacularSwaggerSplitView):
    """Swagger UI from drf-spectacular-sidecar's files (no CDN), under the site's
    CSP: the page has no inline code and its set-up script is a separate request
    (``?script``); frontend.middleware leaves /api/docs/ alone, so it is set here."""

    template_name = "drf_spectacular/swagger_ui_strict.html"

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response.headers["Content-Security-Policy"] = CSP
        return response


urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("labelapp.api.urls")),
    path("api/schema/", SchemaView.as_view(), name="schema"),
    path("api/docs/", DocsView.as_view(url_name="schema"), name="api-docs"),
    path("", include("frontend.urls")),
]


# Errors Django answers itself (before or outside a view): JSON on the API, the
# usual pages elsewhere.
def _handler(code: int, default):
    def handler(request, exception=None, **kwargs):
        if request.path.startswith("/api/"):
            return json_error(request, code, exception)
        if code == 500:
            return default(request)
        return default(request, exception)

    return handler


handler400 = _handler(400, defaults.bad_request)
handler403 = _handler(403, defaults.permission_denied)
handler404 = _handler(404, defaults.page_not_found)
handler500 = _handler(500, defaults.server_error)
