"""``vcl-serve``: search an index over HTTP (an ASGI app on FastAPI + uvicorn).

Importing this package loads neither FastAPI nor uvicorn (``pip install 'vcl[serve]'``);
:func:`vcl_infer.serve.app.create_app` does. The parts:

- :mod:`~vcl_infer.serve.config`: the server's settings and limits;
- :mod:`~vcl_infer.serve.state`: the read-only index, reopened when a build commits a new
  generation, without a restart;
- :mod:`~vcl_infer.serve.engine`: queries off the event loop, in a bounded pool (persistent
  decode workers, the index's own encoder);
- :mod:`~vcl_infer.serve.thumbnail`: a frame of a matched range as PNG;
- :mod:`~vcl_infer.serve.app`: routes, auth, upload limit and JSON errors;
- :mod:`~vcl_infer.serve.cli`: the ``vcl-serve`` command.
"""
