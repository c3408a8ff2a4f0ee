import os

from django.core.wsgi import get_wsgi_application

from labelapp.queue.fastlane import with_fast_lane

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# The annotation hot path (next, label) is answered by the fast lane when plain;
# everything else is Django's (labelapp/queue/fastlane.py).
application = with_fast_lane(get_wsgi_application())
