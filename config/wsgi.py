import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_wsgi_application()  # sets Django up: apps are loaded

# The annotation hot path (next, label) is answered by the fast lane when plain;
# everything else is Django's (labelapp/queue/fastlane.py). Imported once apps are
# loaded: labelapp.queue imports the models.
from labelapp.queue.fastlane import with_fast_lane  # noqa: E402

application = with_fast_lane(django_application)
