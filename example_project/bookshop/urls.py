from django.urls import include, path

urlpatterns = [
    path("wove/", include("wove.contrib.django.urls")),  # the trace pages
    path("", include("catalog.urls")),
]
