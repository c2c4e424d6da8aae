"""A small web page for enhancing photos in the browser (``rave serve``)."""

from rave.server.app import make_server

__all__ = ["make_server"]
