from django.urls import path

from testproject.jobs import views

urlpatterns = [path("record/", views.record)]
