"""Contract hygiene: every message, field, enum value, service and RPC carries a comment; stubs import."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from wisp import protogen

# Field numbers in descriptor.proto used to build SourceCodeInfo paths.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MSG_FIELD, _MSG_NESTED, _MSG_ENUM, _MSG_ONEOF = 2, 3, 4, 8
_ENUM_VALUE, _SERVICE_METHOD = 2, 2


def _descriptors(tmp_path: Path) -> descriptor_pb2.FileDescriptorSet:
    out = tmp_path / "wisp.desc"
    args = [
        "protoc",
        f"-I{protogen.PROTO_ROOT}",
        f"-I{resources.files('grpc_tools') / '_proto'}",
        "--include_source_info",
        f"--descriptor_set_out={out}",
        *(str(p) for p in protogen.proto_files()),
    ]
    assert protoc.main(args) == 0
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _enum(e: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], name: str) -> Iterator[tuple]:
    yield path, f"enum {name}"
    for i, v in enumerate(e.value):
        yield (*path, _ENUM_VALUE, i), f"enum value {name}.{v.name}"


def _message(m: descriptor_pb2.DescriptorProto, path: tuple[int, ...], name: str) -> Iterator[tuple]:
    yield path, f"message {name}"
    for i, f in enumerate(m.field):
        yield (*path, _MSG_FIELD, i), f"field {name}.{f.name}"
    for i, o in enumerate(m.oneof_decl):
        if not o.name.startswith("_"):  # synthetic oneofs of proto3 `optional`
            yield (*path, _MSG_ONEOF, i), f"oneof {name}.{o.name}"
    for i, n in enumerate(m.nested_type):
        if not n.options.map_entry:
            yield from _message(n, (*path, _MSG_NESTED, i), f"{name}.{n.name}")
    for i, e in enumerate(m.enum_type):
        yield from _enum(e, (*path, _MSG_ENUM, i), f"{name}.{e.name}")


def test_every_element_is_documented(tmp_path: Path) -> None:
    undocumented: list[str] = []
    for fd in _descriptors(tmp_path).file:
        if not fd.name.startswith("wisp/"):
            continue
        assert fd.package == "wisp.v1", fd.name
        comments = {
            tuple(loc.path): (loc.leading_comments + loc.trailing_comments).strip()
            for loc in fd.source_code_info.location
        }
        elements: list[tuple] = []
        for i, m in enumerate(fd.message_type):
            elements += _message(m, (_FILE_MESSAGE, i), m.name)
        for i, e in enumerate(fd.enum_type):
            elements += _enum(e, (_FILE_ENUM, i), e.name)
        for i, s in enumerate(fd.service):
            elements.append(((_FILE_SERVICE, i), f"service {s.name}"))
            elements += [((_FILE_SERVICE, i, _SERVICE_METHOD, j), f"rpc {s.name}.{r.name}")
                         for j, r in enumerate(s.method)]
        undocumented += [f"{fd.name}: {label}" for path, label in elements if not comments.get(path)]
    assert not undocumented, "undocumented contract elements:\n" + "\n".join(undocumented)


def test_stubs_import_and_round_trip() -> None:
    from wisp.v1 import common_pb2, events_pb2, frame_pb2, ingest_pb2, ingest_pb2_grpc, service_pb2_grpc

    frame = frame_pb2.RawFrame(id="f1", obstype=common_pb2.OBS_TYPE_FLAT, exptime_s=3.5, ra_deg=10.0)
    event = events_pb2.FrameIngested(frame=frame, source="upload")
    back = events_pb2.FrameIngested.FromString(event.SerializeToString())
    assert back == event
    assert back.frame.HasField("ra_deg") and not back.frame.HasField("dec_deg")
    chunk = ingest_pb2.UploadChunk(data=b"abc")
    assert chunk.WhichOneof("part") == "data"
    assert ingest_pb2.IngestResult.STATUS_DUPLICATE == 2
    assert hasattr(ingest_pb2_grpc, "IngestServicer") and hasattr(service_pb2_grpc, "ServiceInfoStub")
