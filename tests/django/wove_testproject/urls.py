from django.urls import include, path

from .shop import server_views, views

urlpatterns = [
    path("wove/", include("wove.contrib.django.urls")),
    path("parallel/", views.parallel),
    path("parallel-async/", views.parallel_async),
    path("orm-in-async-task/", views.orm_in_async_task),
    path("sensitive/", views.sensitive),
    path("detach/", views.detach_view),
    path("detach-raises/", views.detach_then_raise),
    path("detach-raises-async/", views.detach_then_raise_async),
    path("detach-decorated/", views.detach_decorated),
    path("detach-task/", views.detach_task),
    path("detach-fails/", views.detach_fails),
    path("detach-async/", views.detach_async),
    path("in-atomic/", views.in_atomic),
    path("sql-and-cancelled/", views.sql_and_cancelled),
]

# For the tests against real servers (tests/django/test_real_servers.py).
urlpatterns += [
    path("ping/", server_views.ping),
    path("login/", server_views.log_in),
    path("many-queries/", server_views.many_queries),
    path("many-queries-async/", server_views.many_queries_async),
    path("atomic-default/", server_views.atomic_default),
    path("sensitive-and-pool/", server_views.sensitive_and_pool),
    path("db-pid/", server_views.db_pid),
    path("detach-query/", server_views.detach_query),
    path("fork-on-request-thread/", server_views.fork_on_request_thread),
    path("fork-server/", server_views.fork_server),
    # tests/django/test_timeout_budget.py
    path("slow-queries-timeout/", server_views.slow_queries_timeout),
    path("fill-pool/", server_views.fill_pool),
    path("thread-report/", server_views.thread_report),
    # tests/django/test_async_orm.py
    path("async-orm/", server_views.async_orm),
    path("async-orm-in-atomic/", server_views.async_orm_in_atomic),
    path("async-task-threads/", server_views.async_task_threads),
    path("atomic-async-tasks/", server_views.atomic_async_tasks),
]
