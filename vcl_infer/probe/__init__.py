"""Probe: action recognition and the papers' evaluations on frozen embeddings.

``labels`` (data set layouts: folders, splits, CSV), ``linear`` (the scikit-learn linear
probe) and ``paths`` (its two files), ``classify`` (fit and predict per video),
``evaluation`` (retrieval and linear protocols, results files), ``retrieval_metrics``
(recall at k), ``confusion_plot`` (the labelled confusion matrix).
"""
