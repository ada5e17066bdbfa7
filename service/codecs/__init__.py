"""Payload codecs: the only place request bodies become a FeatureBatch and results become bodies.

``records`` is the native (v1) protocol, ``v2`` the Open Inference Protocol; ``columns`` holds the
per-feature value rules both share.
"""
