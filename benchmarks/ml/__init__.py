"""``strom bench ml``: window features and model scoring, strom beside Quix Streams and Bytewax.

:mod:`~benchmarks.ml.runner` runs the suite, :mod:`~benchmarks.ml.report` writes its Markdown;
the shared contract of the three pipelines is :mod:`benchmarks.ml.children._ml_common`.
"""
