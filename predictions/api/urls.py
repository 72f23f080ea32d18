"""API routes: /api/v1/jobs/…"""

from rest_framework.routers import SimpleRouter

from .views import JobViewSet

# No format-suffix routes (jobs/<id>.json): the actions take no format argument, so each was
# a 500; ?format= chooses the format. The API root is mlsite/urls.py's.
router = SimpleRouter()
router.register("jobs", JobViewSet, basename="job")
urlpatterns = router.urls
