"""WSGI entry point."""

import gc
import os
from importlib import import_module

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mlsite.settings")
application = get_wsgi_application()
# Django imports the URLconf, and with it every view, DRF and its renderers, on a process's
# first request: half a second of that request (a batch upload, bench/), in each process.
import_module(settings.ROOT_URLCONF)

# What loading the project created lives as long as the process: keep it out of the garbage
# collector's full passes. Each such pass otherwise walked it all while holding the GIL,
# stalling every thread of the process for 150-220 ms (bench/single, 2 gunicorn processes;
# 45-75 ms frozen) and adding a third to the process's time in the collector.
gc.freeze()
