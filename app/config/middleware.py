"""Site-wide middleware (config/settings/base.py, MIDDLEWARE)."""

from django.http import HttpRequest, HttpResponseBase


def head_without_body(get_response):
    """A HEAD request gets the headers of its GET and no body (RFC 9110 §9.3.2).

    Django's views answer HEAD like GET and leave dropping the body to the server; gunicorn
    does drop it but logs a warning for every such response ("WSGI app sent body bytes on a
    no-body response"), e.g. for each monitor's `HEAD /healthz`. Outermost in MIDDLEWARE, so
    Content-Length is the GET's.
    """

    def middleware(request: HttpRequest) -> HttpResponseBase:
        response = get_response(request)
        if request.method != "HEAD":
            return response
        if response.streaming:
            response.streaming_content = []
        else:
            response.headers.setdefault("Content-Length", str(len(response.content)))
            response.content = b""
        return response

    return middleware
