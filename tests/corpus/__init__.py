"""Generated corpus of bad or awkward inputs (see :mod:`corpus.make_corpus`)."""
