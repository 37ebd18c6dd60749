"""``finnchain serve``: the Open Inference Protocol (KServe v2) over HTTP and gRPC, on the
controller, in front of a chain: ``oip`` (the protocol's model, metadata and checks),
``dispatch`` (the chain's window shared by concurrent requests), ``rest`` and ``grpc_api``
(the two transports), ``server`` (the command)."""
