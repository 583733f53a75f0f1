from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("authors/<slug:slug>/", views.author_compare, name="author_compare"),
    path("authors/<slug:slug>/sequential/", views.author_sequential, name="author_sequential"),
    path("authors/<slug:slug>/wove/", views.author_wove, name="author_wove"),
    path("authors/<slug:slug>/royalties/", views.author_royalties, name="author_royalties"),
    path("orders/", views.orders, name="orders"),
    path("orders/<int:pk>/", views.order, name="order"),
]
