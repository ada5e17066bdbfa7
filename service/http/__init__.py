"""The HTTP layer: a lean ASGI front for the hot paths, FastAPI behind it for everything else.

Nothing is imported here: the protocol (``service.http.protocol``) is unpickled in every spawned
worker before the app is built, and must not pull FastAPI, numpy or ONNX Runtime in with it.
The app factory is ``service.http.app.create_app``.
"""
