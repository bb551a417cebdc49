"""Golden vectors: our messages encoded by Google's protobuf runtime.

Generates Python code from proto/user_service.proto with grpcio-tools, builds
each message below with the official `protobuf` package, and writes its bytes
as hex to OUT_DIR/<name>.hex. tests/vectors.rs decodes every file with the
hand-written Rust types, compares with the value it expects under the same
name, and re-encodes byte for byte.

File format, one `key: value` per line:
    message: <proto message name>
    bytes: <hex of the wire bytes>
    reencoded: <hex>   only where a re-encoding differs (unknown fields are
                       dropped by prost; out-of-order or repeated fields are
                       written once, in field order)

Usage: python generate.py OUT_DIR
"""

import os
import sys
import tempfile

from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_pb2():
    out = tempfile.mkdtemp()
    proto_dir = os.path.join(ROOT, "proto")
    code = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}", os.path.join(proto_dir, "user_service.proto")])
    if code != 0:
        sys.exit(f"protoc rejected proto/user_service.proto (exit {code})")
    sys.path.insert(0, out)
    import user_service_pb2  # noqa: E402

    return user_service_pb2


def hexed(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data)


def vectors(pb):
    """(name, message, wire bytes, re-encoded bytes or None)."""
    full_user = pb.User(
        id="ü-1",
        name="Zoë 😈",
        email="zoe@example.com",
        role=pb.USER_ROLE_VIEWER,
        created_at=-5,
        bio="☺\t\r\n",
    )
    plain = [
        ("user_full", full_user),
        ("user_empty", pb.User()),
        ("user_bio_present_but_empty", pb.User(id="u", bio="")),
        ("user_unknown_enum_value", pb.User(id="u", role=7)),
        ("user_max_int64", pb.User(created_at=2**63 - 1)),
        ("user_min_int64", pb.User(created_at=-(2**63))),
        ("get_user_request", pb.GetUserRequest(user_id="abc")),
        ("get_user_request_empty", pb.GetUserRequest()),
        ("get_user_response", pb.GetUserResponse(user=full_user)),
        ("get_user_response_no_user", pb.GetUserResponse()),
        ("get_user_response_empty_user", pb.GetUserResponse(user=pb.User())),
        ("list_users_request_edges", pb.ListUsersRequest(limit=-1, offset=-(2**31), filter_role="USER_ROLE_ADMIN")),
        ("list_users_request_max", pb.ListUsersRequest(limit=2**31 - 1, offset=2**31 - 1)),
        (
            "list_users_response_three",
            pb.ListUsersResponse(
                users=[full_user, pb.User(id="2"), pb.User()],
                total_count=3,
            ),
        ),
        ("list_users_response_empty", pb.ListUsersResponse()),
        ("create_user_request_no_bio", pb.CreateUserRequest(name="Ann", email="ann@example.com", role=pb.USER_ROLE_ADMIN)),
        ("create_user_request_with_bio", pb.CreateUserRequest(name="Ann", email="ann@example.com", bio="x" * 300)),
        (
            "update_user_request_all_present_and_empty",
            pb.UpdateUserRequest(user_id="u", name="", email="", role=pb.USER_ROLE_UNSPECIFIED, bio=""),
        ),
        ("update_user_request_id_only", pb.UpdateUserRequest(user_id="u")),
        ("delete_user_request", pb.DeleteUserRequest(user_id="u")),
        ("delete_user_response", pb.DeleteUserResponse(user=full_user)),
        ("event_stream_request_star", pb.EventStreamRequest(user_id="*")),
        (
            "subscribe_user_events_request",
            pb.SubscribeUserEventsRequest(user_ids=["*", "0190c0de-0000-7000-8000-000000000000", ""]),
        ),
        (
            "user_event_binary_payload",
            pb.UserEvent(event_type="user_created", user_id="u", payload=bytes([0xFF, 0x00, 0x80]), timestamp=-1),
        ),
        (
            "user_event_user_payload",
            pb.UserEvent(event_type="user_updated", user_id="ü-1", payload=full_user.SerializeToString(), timestamp=1_700_000_000_123),
        ),
    ]
    for name, message in plain:
        yield name, message, message.SerializeToString(), None

    # Unknown fields of every wire type after the known ones: varint (9),
    # 64-bit (10), length-delimited (11), 32-bit (12). Python keeps them;
    # prost skips them, so its re-encoding is the known part alone.
    known = pb.GetUserRequest(user_id="abc")
    unknown = bytes([0x48, 0x96, 0x01]) + bytes([0x51]) + bytes(8) + bytes([0x5A, 0x02]) + b"hi" + bytes([0x65]) + bytes(4)
    parsed = pb.GetUserRequest.FromString(known.SerializeToString() + unknown)
    yield "get_user_request_unknown_fields", parsed, parsed.SerializeToString(), known.SerializeToString()

    # Fields out of order, and a field repeated (the last one wins).
    merged = pb.User(created_at=5).SerializeToString() + pb.User(id="x", name="first").SerializeToString() + pb.User(name="last").SerializeToString()
    parsed = pb.User.FromString(merged)
    yield "user_fields_out_of_order_and_repeated", parsed, merged, parsed.SerializeToString()


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    pb = load_pb2()
    for name, message, data, reencoded in vectors(pb):
        lines = [f"message: {message.DESCRIPTOR.name}", f"bytes: {hexed(data)}"]
        if reencoded is not None and reencoded != data:
            lines.append(f"reencoded: {hexed(reencoded)}")
        with open(os.path.join(out_dir, f"{name}.hex"), "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
