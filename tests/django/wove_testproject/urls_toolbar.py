"""The test project's URLs, the toolbar's, its static files (any server), and a page."""

from debug_toolbar.toolbar import debug_toolbar_urls
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.http import HttpRequest, HttpResponse
from django.urls import path

from wove.contrib.django.csp import csp_nonce

from .shop.views import parallel
from .urls import urlpatterns as project_urls

# Opens the Wove panel once the toolbar's script has run, for a screenshot. The nonce:
# under a Content Security Policy (settings_csp) an inline script needs the request's.
_OPEN_PANEL = """<script{nonce}>
addEventListener("load", () => setTimeout(() => {
  const root = document.getElementById("djDebugRoot");
  (root.shadowRoot || document).querySelector("a.WovePanel").click();
}, 100));
</script>"""


def page(request: HttpRequest) -> HttpResponse:
    """An HTML page (the toolbar only shows on HTML) that runs /parallel/'s weave."""
    parallel(request)
    nonce = csp_nonce(request)
    script = _OPEN_PANEL.replace("{nonce}", f' nonce="{nonce}"' if nonce else "")
    return HttpResponse(
        "<!doctype html><html><head><title>Wove panel</title></head>"
        f"<body><p>A page that ran a weave.</p>{script}</body></html>"
    )


urlpatterns = [
    *project_urls,
    path("toolbar-page/", page),
    *debug_toolbar_urls(),
    *staticfiles_urlpatterns(),
]
