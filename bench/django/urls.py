from django.urls import path

from . import views

urlpatterns = [
    path("ping/", views.ping),
    path("author/wove/", views.author_wove),
    path("author/sequential/", views.author_sequential),
    path("author/one-query/", views.one_query),
    path("author/async/", views.author_async),
    path("author/async-sequential/", views.author_async_sequential),
    path("author/async-one-query/", views.one_query_async),
    path("ten-tasks/", views.ten_tasks),
    path("ten-queries/", views.ten_queries),
]
