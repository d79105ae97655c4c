"""Thin click layers over the runtime's facades (imports inside commands keep --help instant)."""

NOT_YET = (
    "`{command}` is not implemented yet in vcl {version}: the FAISS + SQLite index and search "
    "arrive with the runtime work (issue 4). What works today: `vcl-export` (encoder bundles) "
    "and the Python API for reading videos (vcl_infer.decode_clips / open_video)."
)
