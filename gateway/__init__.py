"""OTA Gateway: a site's verified mirror, device update API, metrics broker and canary gates.

The house, from the ground up (a room imports only rooms below it; ``tests/test_house.py`` reads
the imports and enforces the rules marked *):

1. ``gateway.core`` and ``firmware_compat``: the pure decisions and their values. Settings
   dataclasses, manifests and metrics schemas, errors, device records, cohorts, eligibility, the
   poll policy, waves, gates (anytime-valid paired decisions, one table of criteria) and the site's
   decision state (``core.site_state``; its transitions in ``core.site``: ``apply_index``,
   ``on_control``, ``tick``, each returning its effects as values, ``core.site_effects``),
   telemetry windows and aggregation, drift (``drift_sketch``: the devices' feature
   sketches; ``drift_psi``: the distance; ``drift``: the windows against the reference and the
   site's past, and the alert, which the gates read as the ``input_drift`` row), pacing,
   the eviction choice,
   figures for people (``human``, ``progress``), the limit on repeated log lines (``repeats``),
   hawkBit DDI's documents, action ids and feedback (``ddi``), samples for retraining
   (``samples``: a device's offer, and which go up within the day's budget).
   No I/O, no clock, no asyncio: values and ``now`` in, decisions out. * It imports only the
   standard library, ``firmware_compat`` and itself; * it neither logs nor catches every error
   (``except Exception``): it names the errors it expects and returns what happened as a value,
   for the shell to log.
2. ``runtime``: the building blocks every room stands on: ``atomic`` (crash-safe writes),
   ``stats``, ``tasks``, ``supervisor`` (every long-lived task restarted with backoff; the failing
   ones named), ``notify``, ``health``, ``redact``, ``accept``, ``diskspace``, ``sdnotify``,
   ``mqtt_link`` (a client of someone else's broker), ``jsonfast`` (the ingest's JSON, by
   msgspec, stepping aside for the core where it would read otherwise), ``instance`` (which
   gateway owns a data folder, and where its operator API listens). * It imports only the core.
3. The I/O rooms, each with one job: ``trust`` (verify the signed index and keys, or a TUF
   repository with python-tuf's ``TrustedMetadataSet`` (``trust.tuf``, ``trust.tuf_state``); the
   clock floor), ``store`` (verified blobs on disk: the catalog, the served set, the scrub and the
   evictor behind one ``ArtifactStore``) *never importing network code*, ``inventory``
   (the devices, and ``inventory.access``: who a device is and whether it may talk to us),
   ``uplink`` (the disk outbox: its file, appends, bounds and delivery; its sinks and the site
   report), ``broker`` (embedded MQTT, or the
   site's own broker through ``broker.external``: gmqtt on the loop), ``discovery`` (mDNS),
   ``telemetry`` (ingest, drift signals (``telemetry.drift``), the dashboard's history, the site's
   trace), ``rollout`` (the gate keeper shell, gate files, ``rollout.polls`` (the poll answer and
   its render cache), ``rollout.site_loop`` (the gates in time, and what follows their
   transitions) and ``gate replay``: the same decisions over a recorded or simulated site),
   ``mirror`` (upstream polling and transfers, verified chunk by chunk), ``bundle`` (air-gapped
   imports and exports through the mirror's own checks), ``samples`` (samples for retraining: the
   bounded store, the blobs' upload, the desk that takes them over HTTP and MQTT), ``ops`` (what
   operators read: ``ops.status``, ``ops.prometheus`` and its drift and shadow families,
   ``ops.readiness``). Each declares the events it emits (a listener protocol or list given at
   construction: ``store.events.StoreListener``, the mirror's ``on_index``, telemetry's
   ``on_event``/``on_windows``); nobody assigns callbacks onto another from outside.
4. ``http``: the device and operator APIs (hawkBit DDI, ``http.ddi``, beside the native one).
   * It imports neither the broker nor the service: a handler reads the narrow objects it uses
   from typed ``web.AppKey``s (``http.context``), with a small protocol there where the real
   object lives in a room above or beside it.
5. ``service``: the process. ``service.settings`` (loading) and ``service.config_files`` (the
   files the configuration names, read in one step); ``service.wiring``: constructors take values
   and do no I/O, and ``start`` opens everything under the data folder's lock in one
   ``AsyncExitStack`` (a failed start closes what it opened, in reverse; ``service.listeners``
   opens the HTTP listeners and mDNS on it); ``service.process`` (signals and systemd around it);
   ``service.healthcheck``. Then ``commands`` and ``cli``, the one module left at the top with
   ``__main__``. * Nothing but these entry points stands loose at the top of ``gateway/``.

Beside the house, two programs of their own. * ``gateway.agent`` is the reference device agent:
it imports nothing of the gateway but the pure core (stdlib only), so a
device can run it without the server's rooms (it checks the signed statement whose format,
``core.statement``, the registry signs and the trust room checks too). ``gateway.registry``
is the cloud-side tool (the signed index; the TUF repository: ``registry.tuf_repo`` for the files,
``registry.tuf_life`` for the life of keys): * it imports no I/O room of the gateway, only the
core, the pure signature helpers of ``trust.keys`` and ``trust.canonical`` and
``runtime.atomic``.
"""

__version__ = "0.1.0"
