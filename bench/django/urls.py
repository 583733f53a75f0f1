from django.urls import path

from . import fork_views, views

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
    path("fork/<int:number>/", fork_views.fork),
    path("noisy/", fork_views.noisy),
]
