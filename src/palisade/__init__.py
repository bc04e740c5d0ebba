"""Palisade: an open zero-trust network-security platform for Kubernetes.

The package is layered (see docs/architecture.md): ``selector`` and ``model`` describe what users
write, ``policy`` is the one engine that decides every flow, ``datastore`` keeps resources with
revisions, and ``cli`` is a thin shell over all of them.
"""

__version__ = "0.1.0"
