"""The jobtrail demo product: a page, a Flask API and an RQ worker."""
