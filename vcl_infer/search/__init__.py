"""Search: query an index with a video and show what matched.

``query`` (ranked videos or moments for a query video or a time range of one), ``moments``
(where in a video the query matches), ``html_report`` (the self-contained results page),
``png`` (PNG thumbnails with zlib alone).
"""
