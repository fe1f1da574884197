"""Samples for retraining: the bounded store (:mod:`.store`), the upload of chosen samples
(:mod:`.upload`), and the desk that takes offers from HTTP and MQTT and runs the budget
(:mod:`.desk`). The decisions (what is a valid sample, which go up) are ``gateway.core.samples``'s."""
