from django.urls import include, path

from .shop import views

urlpatterns = [
    path("wove/", include("wove.contrib.django.urls")),
    path("parallel/", views.parallel),
    path("parallel-async/", views.parallel_async),
    path("orm-in-async-task/", views.orm_in_async_task),
    path("sensitive/", views.sensitive),
    path("detach/", views.detach_view),
    path("detach-raises/", views.detach_then_raise),
]
