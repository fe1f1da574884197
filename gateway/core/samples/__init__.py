"""Samples for retraining (issue 26, items 3 and 4): what a device offers and what the site sends.

Pure, like the rest of the core: :mod:`.offer` parses and checks a device's sample (its reason,
model version, class, confidence, and an embedding or raw input) into a value with its content
hash; :mod:`.budget` chooses which kept samples go up within the day's uplink budget;
:mod:`.settings` is the ``[samples]`` section. The store, the upload and the endpoints are the
``gateway.samples`` room's and ``gateway.http.samples``'s.
"""
