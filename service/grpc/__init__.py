"""The Open Inference Protocol over gRPC: a third front over the one request pipeline.

Nothing here is imported unless the gRPC port is on (the HTTP app's lifespan imports
:mod:`service.grpc.server` then): the generated messages register package ``inference`` in
protobuf's default pool, as ``tritonclient.grpc`` does, and one process cannot hold both.
"""
