"""The Open Inference Protocol's HTTP/REST side (KServe v2, as Triton serves it), a Starlette
app: health, server and model metadata, infer with JSON tensors or the binary tensor data
extension (a JSON header of ``Inference-Header-Content-Length`` bytes, then the tensors'
bytes). Every error is the protocol's ``{"error": "..."}`` with a message naming the field."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from finnchain.serve.oip import BAD_REQUEST, TOO_LARGE, ModelInfo, ProtocolError
from finnchain.serve.service import Service

HEADER_LENGTH = "inference-header-content-length"


def error(exc: ProtocolError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status)


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused past ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProtocolError(TOO_LARGE, f"a body of {int(declared):,} bytes: at most {limit:,} "
                                       "(finnchain serve --max-frames)")
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding not in ("identity", ""):
        raise ProtocolError(BAD_REQUEST, f"Content-Encoding {encoding}: this server takes "
                                         "uncompressed bodies")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(TOO_LARGE, f"a body of more than {limit:,} bytes "
                                           "(finnchain serve --max-frames)")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_infer(body: bytes, header_length: str | None) -> tuple[dict, list]:
    """The request's JSON and each input's data: its binary bytes or its JSON 'data'."""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise ProtocolError(BAD_REQUEST, f"Inference-Header-Content-Length {header_length} "
                                             f"for a body of {len(body)} bytes")
        n = int(header_length)
    else:
        n = len(body)
    try:
        request = json.loads(body[:n])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(BAD_REQUEST, f"the request is not JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) \
            or not all(isinstance(t, dict) for t in request["inputs"]):
        raise ProtocolError(BAD_REQUEST, "the request has no 'inputs' list of tensors")
    data, offset = [], n
    for t in request["inputs"]:
        size = (t.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(body):
                raise ProtocolError(BAD_REQUEST, f"input '{t.get('name')}': binary_data_size "
                                                 f"{size}, but {len(body) - offset} bytes "
                                                 "follow the JSON")
            data.append(memoryview(body)[offset: offset + size])
            offset += size
        else:
            data.append(t.get("data"))
    if offset != len(body):
        raise ProtocolError(BAD_REQUEST, f"{len(body) - offset} bytes follow the request's "
                                         "tensors that no input's binary_data_size accounts for")
    return request, data


def wants_binary(request: dict) -> tuple[list[str], bool]:
    """The outputs asked for and whether they go back as binary data (the extension's
    per-output 'binary_data' or the request's 'binary_data_output')."""
    outputs = request.get("outputs") or []
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise ProtocolError(BAD_REQUEST, "'outputs' must be a list of tensors")
    binary = bool((request.get("parameters") or {}).get("binary_data_output", False))
    for o in outputs:
        binary = bool((o.get("parameters") or {}).get("binary_data", binary))
    return [str(o.get("name")) for o in outputs], binary


def app(service: Service) -> Starlette:
    model: ModelInfo = service.model

    async def live(_: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(_: Request) -> Response:
        ok = service.ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def server_meta(_: Request) -> Response:
        return JSONResponse(service.server_metadata())

    def check_path(request: Request) -> None:
        model.check_model(request.path_params["name"], request.path_params.get("version"))

    async def model_meta(request: Request) -> Response:
        try:
            check_path(request)
        except ProtocolError as exc:
            return error(exc)
        return JSONResponse(model.metadata())

    async def model_ready(request: Request) -> Response:
        try:
            check_path(request)
        except ProtocolError as exc:
            return error(exc)
        ok = service.ready()
        return JSONResponse({"name": model.name, "ready": ok}, status_code=200 if ok else 503)

    async def infer(request: Request) -> Response:
        try:
            check_path(request)
            body = await read_body(request, model.max_body)
            req, data = parse_infer(body, request.headers.get(HEADER_LENGTH))
            names, binary = wants_binary(req)
            model.check_outputs(names)
            frames = model.frames(req["inputs"], data)
            out = await service.infer(frames)
        except ProtocolError as exc:
            return error(exc)
        head, raw = model.response(out, str(req.get("id") or ""), binary)
        text = json.dumps(head, separators=(",", ":")).encode()
        if not raw:
            return Response(text, media_type="application/json")
        return Response(text + raw, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(len(text))})

    routes = [Route("/v2/health/live", live), Route("/v2/health/ready", ready),
              Route("/v2", server_meta)]
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [Route(base, model_meta), Route(base + "/ready", model_ready),
                   Route(base + "/infer", infer, methods=["POST"])]
    return Starlette(routes=routes)
