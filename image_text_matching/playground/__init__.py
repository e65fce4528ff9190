"""The image-text matching web playground (``tools/itm_playground.py`` starts it).

The one rule: the server is the standard library's ``ThreadingHTTPServer`` with a static page and
a JSON API; no web framework, and nothing but the page's three files is served from disk.
"""
from .server import (Limits, Playground, PlaygroundError, build_playground, decode_image,
                     heatmap_overlay, image_tensor, make_server)

__all__ = ['Limits', 'Playground', 'PlaygroundError', 'build_playground', 'decode_image',
           'heatmap_overlay', 'image_tensor', 'make_server']
