"""Serving: the HTTP app, models by registry alias, deployment strategies, the prediction log and
the progressive-delivery controller."""
