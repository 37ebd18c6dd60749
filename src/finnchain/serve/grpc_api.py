"""The Open Inference Protocol's gRPC side: the ``inference.GRPCInferenceService`` that KServe
v2 defines and Triton extends, from the service definition ``tritonclient[grpc]`` ships (the
same protocol buffers Triton's server compiles). Live, ready, metadata and infer; the rest of
Triton's extensions (repository, shared memory, statistics) answer UNIMPLEMENTED."""

from __future__ import annotations

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from finnchain.serve.oip import (
    BAD_REQUEST,
    FAILED,
    NOT_FOUND,
    TIMEOUT,
    TOO_LARGE,
    UNAVAILABLE,
    ProtocolError,
)
from finnchain.serve.service import Service

CODES = {BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT, NOT_FOUND: grpc.StatusCode.NOT_FOUND,
         TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED, FAILED: grpc.StatusCode.INTERNAL,
         UNAVAILABLE: grpc.StatusCode.UNAVAILABLE, TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED}


def tensor_meta(t: dict) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=t["name"], datatype=t["datatype"],
                                                   shape=t["shape"])


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, service: Service) -> None:
        self.service, self.model = service, service.model

    async def _abort(self, context, exc: ProtocolError):
        await context.abort(CODES.get(exc.status, grpc.StatusCode.UNKNOWN), exc.message)

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.service.ready())

    async def ModelReady(self, request, context):
        try:
            self.model.check_model(request.name, request.version)
        except ProtocolError as exc:
            await self._abort(context, exc)
        return pb.ModelReadyResponse(ready=self.service.ready())

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(**self.service.server_metadata())

    async def ModelMetadata(self, request, context):
        try:
            self.model.check_model(request.name, request.version)
        except ProtocolError as exc:
            await self._abort(context, exc)
        m = self.model.metadata()
        return pb.ModelMetadataResponse(
            name=m["name"], versions=m["versions"], platform=m["platform"],
            inputs=[tensor_meta(t) for t in m["inputs"]],
            outputs=[tensor_meta(t) for t in m["outputs"]])

    async def ModelInfer(self, request, context):
        try:
            self.model.check_model(request.model_name, request.model_version)
            self.model.check_outputs([o.name for o in request.outputs])
            inputs = [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                      for t in request.inputs]
            if request.raw_input_contents:
                if len(request.raw_input_contents) != len(request.inputs):
                    raise ProtocolError(BAD_REQUEST, f"{len(request.raw_input_contents)} "
                                                     f"raw_input_contents for "
                                                     f"{len(request.inputs)} inputs")
                data = list(request.raw_input_contents)
            else:  # UINT8 travels in uint_contents
                data = [list(t.contents.uint_contents) or None for t in request.inputs]
            frames = self.model.frames(inputs, data)
            out = await self.service.infer(frames)
        except ProtocolError as exc:
            await self._abort(context, exc)
        head, raw = self.model.response(out, request.id, binary=True)
        t = head["outputs"][0]
        return pb.ModelInferResponse(
            model_name=head["model_name"], model_version=head["model_version"], id=request.id,
            outputs=[pb.ModelInferResponse.InferOutputTensor(
                name=t["name"], datatype=t["datatype"], shape=t["shape"])],
            raw_output_contents=[raw])


def server(service: Service, address: str) -> grpc.aio.Server:
    """A gRPC server on ``address`` ('host:port'), not started. Messages may hold a request's
    largest body."""
    limit = service.model.max_body
    s = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                 ("grpc.max_send_message_length", limit)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(service), s)
    if s.add_insecure_port(address) == 0:
        raise OSError(f"gRPC cannot listen on {address}")
    return s
