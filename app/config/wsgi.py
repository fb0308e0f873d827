"""WSGI entry point: `python -m gunicorn -c config/gunicorn.py config.wsgi` from app/.

Defaults to the production settings; dev work uses manage.py runserver.
"""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

application = get_wsgi_application()
