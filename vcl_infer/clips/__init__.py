"""Clips: which frames make which clip, and how decoded frames become model input.

``spec`` (ClipSpec, EncoderSpec: the preprocessing every path shares), ``sampling`` (clip
windows from timestamps alone, no decoding), ``sampling_record`` (the rule an index was
built with), ``preprocess`` (frames -> fitted uint8 clips -> normalised float input).
Pure numpy; :mod:`vcl_infer.video` applies these rules while decoding.
"""
