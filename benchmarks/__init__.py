"""strom's benchmark suite: strom beside its peers, measured in one run (``strom bench``)."""
