"""``path("wove/", include("wove.contrib.django.urls"))``: the trace pages, namespace ``wove``."""

from django.urls import path

from . import views

app_name = "wove"

urlpatterns = [
    path("", views.trace_list, name="trace_list"),
    path("traces.json", views.trace_list_json, name="trace_list_json"),
    path("<str:trace_id>.json", views.trace_detail_json, name="trace_detail_json"),
    path("<str:trace_id>/", views.trace_detail, name="trace_detail"),
]
