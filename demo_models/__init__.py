"""Demo models for lightning_recanalysis: short, honest versions of the published recommendation models, with data
that show each analysis at work. Run ``python -m demo_models --help``.

The library never imports this package; it is part of the repository, not of the installed distribution.
"""
