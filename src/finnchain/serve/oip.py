"""The Open Inference Protocol (KServe v2) as finnchain serves it, apart from its transports:
one model, the chain's; its metadata; a request's input checked field by field and turned into
frames; the output as the chain returns it (class indices, INT32, one row per frame)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from finnchain.runtime.chainfile import ChainFile

# HTTP status codes of the protocol's errors (the gRPC side maps them: grpc_api.CODES)
BAD_REQUEST, NOT_FOUND, TOO_LARGE, FAILED, UNAVAILABLE, TIMEOUT = 400, 404, 413, 500, 503, 504
EXTENSIONS = ["binary_tensor_data"]
OUTPUT_TYPE = "INT32"  # the client's class indices
JSON_SLACK = 64 * 1024  # bytes of JSON a request may carry beside its frames


class ProtocolError(Exception):
    """A request the server answers with the protocol's error object: ``status`` is the HTTP
    code, the message names the field."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def server_metadata() -> dict:
    from importlib.metadata import version

    return {"name": "finnchain", "version": version("finnchain"), "extensions": EXTENSIONS}


@dataclass(frozen=True)
class ModelInfo:
    """The one model a server answers for: the chain's, named as in the plan, its version the
    plan's hash."""

    name: str
    version: str  # the plan's hash
    input_name: str
    frame_shape: tuple[int, ...]  # one frame without the batch: (C, H, W)
    output_name: str
    k: int  # values per frame in the output
    max_frames: int  # frames per request at most

    @classmethod
    def from_chain(cls, spec: ChainFile, name: str | None = None,
                   max_frames: int = 1024) -> ModelInfo:
        if spec.input.get("datatype", "UINT8") != "UINT8":
            raise ValueError(f"the chain takes {spec.input['datatype']}, not UINT8 images: "
                             "finnchain serve sends uint8 frames")
        return cls(name=name or spec.model or "finnchain", version=spec.plan_hash,
                   input_name=str(spec.input.get("name") or "input"),
                   frame_shape=tuple(int(d) for d in spec.input["shape"][1:]),
                   output_name=str(spec.output.get("name") or "output"),
                   k=int(np.prod(spec.output["shape"][1:])), max_frames=max_frames)

    @property
    def frame_bytes(self) -> int:
        return int(np.prod(self.frame_shape))

    @property
    def max_body(self) -> int:
        """The largest request body (or gRPC message): ``max_frames`` frames and the JSON
        that may come with them."""
        return self.max_frames * self.frame_bytes + JSON_SLACK

    def metadata(self) -> dict:
        return {"name": self.name, "versions": [self.version], "platform": "finnchain",
                "inputs": [{"name": self.input_name, "datatype": "UINT8",
                            "shape": [-1, *self.frame_shape]}],
                "outputs": [{"name": self.output_name, "datatype": OUTPUT_TYPE,
                             "shape": [-1, self.k]}]}

    def check_model(self, name: str, version: str | None = None) -> None:
        if name != self.name:
            raise ProtocolError(NOT_FOUND, f"unknown model '{name}': this server serves "
                                           f"'{self.name}'")
        if version not in (None, "", self.version):
            raise ProtocolError(NOT_FOUND, f"model '{name}' has no version '{version}': the "
                                           f"chain runs plan {self.version}")

    def check_outputs(self, names: list[str]) -> None:
        for n in names:
            if n != self.output_name:
                raise ProtocolError(BAD_REQUEST, f"requested output '{n}': model "
                                                 f"'{self.name}' has one output, "
                                                 f"'{self.output_name}'")

    def frames(self, inputs: list[dict], data: list) -> np.ndarray:
        """The frames (N, C, H, W) uint8 of a request's ``inputs`` (each a dict of name,
        datatype, shape) and their ``data`` (bytes, a flat or nested list, or None)."""
        if len(inputs) != 1:
            raise ProtocolError(BAD_REQUEST, f"the request has {len(inputs)} inputs: model "
                                             f"'{self.name}' takes one, '{self.input_name}'")
        t, raw = inputs[0], data[0]
        name = t.get("name")
        where = f"input '{name}'"
        if name != self.input_name:
            raise ProtocolError(BAD_REQUEST, f"{where}: model '{self.name}' has one input, "
                                             f"'{self.input_name}'")
        if t.get("datatype") != "UINT8":
            raise ProtocolError(BAD_REQUEST, f"{where}: datatype {t.get('datatype')}, expected "
                                             "UINT8")
        shape = t.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape) \
                or tuple(shape[1:]) != self.frame_shape or len(shape) != len(self.frame_shape) + 1:
            raise ProtocolError(BAD_REQUEST, f"{where}: shape {shape}, expected "
                                             f"{[-1, *self.frame_shape]} (a batch of frames)")
        n = shape[0]
        if n < 1:
            raise ProtocolError(BAD_REQUEST, f"{where}: shape {shape} holds no frame")
        if n > self.max_frames:
            raise ProtocolError(TOO_LARGE, f"{where}: {n} frames, at most {self.max_frames} "
                                           "per request (finnchain serve --max-frames)")
        size = n * self.frame_bytes
        if raw is None:
            raise ProtocolError(BAD_REQUEST, f"{where}: no data (neither 'data' nor "
                                             "binary_data_size)")
        if isinstance(raw, (bytes, bytearray, memoryview)):
            if len(raw) != size:
                raise ProtocolError(BAD_REQUEST, f"{where}: {len(raw)} bytes of data for shape "
                                                 f"{shape} of UINT8, expected {size}")
            x = np.frombuffer(raw, dtype=np.uint8)
        else:
            try:
                x = np.asarray(raw, dtype=np.int64).reshape(-1)
            except (ValueError, TypeError, OverflowError):
                raise ProtocolError(BAD_REQUEST, f"{where}: data is not a list of integers"
                                    ) from None
            if x.size != size:
                raise ProtocolError(BAD_REQUEST, f"{where}: {x.size} values of data for shape "
                                                 f"{shape}, expected {size}")
            if x.size and (x.min() < 0 or x.max() > 255):
                raise ProtocolError(BAD_REQUEST, f"{where}: data holds values outside UINT8 "
                                                 f"(0..255): {int(x.min())}..{int(x.max())}")
            x = x.astype(np.uint8)
        return x.reshape(n, *self.frame_shape)

    def response(self, out: np.ndarray, request_id: str, binary: bool) -> tuple[dict, bytes]:
        """The response's JSON and, with ``binary``, the bytes that follow it."""
        tensor = {"name": self.output_name, "datatype": OUTPUT_TYPE, "shape": list(out.shape)}
        raw = b""
        if binary:
            raw = np.ascontiguousarray(out, dtype="<i4").tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
        else:
            tensor["data"] = out.reshape(-1).tolist()
        body = {"model_name": self.name, "model_version": self.version, "outputs": [tensor]}
        if request_id:
            body["id"] = request_id
        return body, raw
