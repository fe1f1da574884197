"""Air-gapped sites: a signed registry carried on a stick, and the way back.

A bundle is a plain tar (:mod:`gateway.bundle.layout`): the registry's own files (signed index,
key list, artifacts, their ``.sig`` files, any file a manifest names by URL) under their registry
paths, led by ``bundle.json``, a list of its members with their sizes and sha256 so a truncated or
damaged bundle is seen as such. ``bundle.json`` is not signed and is not trusted: trust comes only
from the cloud's signatures, checked by the mirror exactly as for any upstream.

* :mod:`gateway.bundle.export`: the cloud side, a registry folder into a bundle;
* :mod:`gateway.bundle.source`: a bundle read as an upstream, and the shelf that lends it to the
  running mirror while it is imported;
* :mod:`gateway.bundle.importer`: one import, through the mirror, and its report;
* :mod:`gateway.bundle.watch`: the watched folders (``mirror.import_dir`` and the import spool).
"""
