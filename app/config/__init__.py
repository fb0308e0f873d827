"""Project configuration of the Skinmenu site: settings, URLs, WSGI, gunicorn."""
