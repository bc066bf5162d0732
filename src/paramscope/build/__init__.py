"""Building models: the built-in model zoo (:mod:`paramscope.build.zoo`)."""
