"""The gRPC interop test cases, adapted to UserService, from Python grpcio
with stubs generated from proto/user_service.proto at test time."""

import queue
import threading
import time

import grpc
import pytest

from conftest import PB, RPC


def create(stub, admin, name, email, role=PB.USER_ROLE_VIEWER, bio=None):
    request = PB.CreateUserRequest(name=name, email=email, role=role)
    if bio is not None:
        request.bio = bio
    return stub.CreateUser(request, metadata=admin)


def test_empty_request(stub, admin):
    # An empty ListUsersRequest means "everyone": no users yet, OK.
    assert list(stub.ListUsers(PB.ListUsersRequest(), metadata=admin)) == []
    # An empty GetUserRequest lacks the required id.
    with pytest.raises(grpc.RpcError) as err:
        stub.GetUser(PB.GetUserRequest())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "user_id" in err.value.details()


def test_large_unary(stub, admin):
    with pytest.raises(grpc.RpcError) as err:
        create(stub, admin, "Big", "big@example.com", bio="x" * 270_000)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "invalid bio" in err.value.details()

    user = create(stub, admin, "Just under", "under@example.com", bio="é" * 2000)
    assert user.bio == "é" * 2000
    assert stub.GetUser(PB.GetUserRequest(user_id=user.id)).user == user


def test_client_streaming(stub, admin):
    requests = [PB.CreateUserRequest(name=f"u{i}", email=f"u{i}@example.com") for i in range(4)]
    response = stub.BulkCreateUsers(iter(requests), metadata=admin)
    assert response.total_count == 4
    assert [u.name for u in response.users] == ["u0", "u1", "u2", "u3"]
    assert all(u.role == PB.USER_ROLE_VIEWER for u in response.users)


def test_server_streaming(stub, admin):
    stub.BulkCreateUsers(iter([PB.CreateUserRequest(name=f"u{i}", email=f"u{i}@example.com") for i in range(10)]), metadata=admin)
    users = list(stub.ListUsers(PB.ListUsersRequest(offset=2, limit=5), metadata=admin))
    assert [u.name for u in users] == ["u2", "u3", "u4", "u5", "u6"]
    assert len(list(stub.ListUsers(PB.ListUsersRequest(), metadata=admin))) == 10


def test_ping_pong(stub, admin):
    ann = create(stub, admin, "Ann", "ann@example.com")
    bob = create(stub, admin, "Bob", "bob@example.com")
    outbox = queue.Queue()
    events = stub.WatchUserEvents(iter(outbox.get, None), metadata=admin)
    try:
        for user in (ann, bob):
            outbox.put(PB.EventStreamRequest(user_id=user.id))
            ack = next(events)
            assert (ack.event_type, ack.user_id) == ("subscribed", user.id)
            stub.UpdateUser(PB.UpdateUserRequest(user_id=user.id, name=user.name + "!"), metadata=admin)
            event = next(events)
            assert (event.event_type, event.user_id) == ("user_updated", user.id)
            assert PB.User.FromString(event.payload).name == user.name + "!"
    finally:
        outbox.put(None)
        events.cancel()


def test_empty_stream(stub, admin):
    response = stub.BulkCreateUsers(iter([]), metadata=admin)
    assert response.total_count == 0
    assert list(response.users) == []


def test_custom_metadata(stub, admin):
    metadata = admin + [("x-request-id", "py-42")]
    user = create(stub, admin, "Cy", "cy@example.com")
    _, call = stub.GetUser.with_call(PB.GetUserRequest(user_id=user.id), metadata=metadata)
    assert ("x-request-id", "py-42") in call.initial_metadata()
    stream = stub.ListUsers(PB.ListUsersRequest(), metadata=metadata)
    assert ("x-request-id", "py-42") in stream.initial_metadata()
    list(stream)


def test_status_code_and_message(stub):
    special = "\t\r\n☺😈"
    with pytest.raises(grpc.RpcError) as err:
        stub.GetUser(PB.GetUserRequest(user_id=special))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == f"user {special} not found"


def test_unimplemented_method(channel):
    call = channel.unary_unary("/techoral.users.v1.UserService/NotThere")
    with pytest.raises(grpc.RpcError) as err:
        call(b"")
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_unimplemented_service(channel):
    call = channel.unary_unary("/techoral.users.v1.NoSuchService/GetUser")
    with pytest.raises(grpc.RpcError) as err:
        call(b"")
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def bulk_series(name, code=None):
    labels = f'grpc_method="BulkCreateUsers",grpc_service="techoral.users.v1.UserService",grpc_type="client_stream",protocol="grpc"'
    if code:
        labels = f'grpc_code="{code}",' + labels
    return f"{name}{{{labels}}}"


def test_cancel_after_begin(server, stub, admin):
    release = threading.Event()

    def requests():
        for i in range(3):
            yield PB.CreateUserRequest(name=f"c{i}", email=f"c{i}@example.com")
        release.wait(10)  # hold the stream open until cancelled

    future = stub.BulkCreateUsers.future(requests(), metadata=admin)
    # The server has read all three items...
    server.wait_for_metric(bulk_series("grpc_server_msg_received_total"), 3)
    # ...when the client cancels without closing its stream.
    assert future.cancel()
    release.set()
    with pytest.raises(grpc.FutureCancelledError):
        future.result()
    # The server ends the call as cancelled, and stores none of them.
    server.wait_for_metric(bulk_series("grpc_server_handled_total", "Cancelled"), 1)
    assert list(stub.ListUsers(PB.ListUsersRequest(), metadata=admin)) == []


def finished(server, method, code):
    return [
        r for r in server.records()
        if r.get("fields", {}).get("method") == f"/techoral.users.v1.UserService/{method}"
        and r["fields"].get("code") == code
    ]


def test_cancel_after_first_response(server, stub, admin):
    outbox = queue.Queue()
    events = stub.WatchUserEvents(iter(outbox.get, None), metadata=admin)
    outbox.put(PB.EventStreamRequest(user_id="*"))
    assert next(events).event_type == "subscribed"
    events.cancel()
    outbox.put(None)
    with pytest.raises(grpc.RpcError) as err:
        next(events)
    assert err.value.code() == grpc.StatusCode.CANCELLED
    # The server ended the call and dropped the subscription.
    deadline = time.time() + 5
    while not finished(server, "WatchUserEvents", "CANCELLED") and time.time() < deadline:
        time.sleep(0.05)
    assert finished(server, "WatchUserEvents", "CANCELLED")


def test_timeout_on_sleeping_server(stub, admin):
    outbox = queue.Queue()
    outbox.put(PB.EventStreamRequest(user_id="*"))
    events = stub.WatchUserEvents(iter(outbox.get, None), metadata=admin, timeout=0.5)
    assert next(events).event_type == "subscribed"
    with pytest.raises(grpc.RpcError) as err:
        next(events)  # nothing happens: the deadline passes
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    outbox.put(None)


def test_auth_on_every_rpc_kind(server, stub, admin):
    user = create(stub, admin, "Di", "di@example.com")
    viewer = [("authorization", f"Bearer {server.token('viewer')}")]
    calls = {
        "CreateUser": lambda md: stub.CreateUser(PB.CreateUserRequest(name="X", email="x@example.com"), metadata=md),
        "ListUsers": lambda md: list(stub.ListUsers(PB.ListUsersRequest(), metadata=md)),
        "BulkCreateUsers": lambda md: stub.BulkCreateUsers(iter([PB.CreateUserRequest(name="Y", email="y@example.com")]), metadata=md),
        "WatchUserEvents": lambda md: next(stub.WatchUserEvents(iter([PB.EventStreamRequest(user_id="*")]), metadata=md)),
        "UpdateUser": lambda md: stub.UpdateUser(PB.UpdateUserRequest(user_id=user.id, name="Z"), metadata=md),
        "DeleteUser": lambda md: stub.DeleteUser(PB.DeleteUserRequest(user_id=user.id), metadata=md),
    }
    for method, call in calls.items():
        with pytest.raises(grpc.RpcError) as err:
            call(None)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, method
        with pytest.raises(grpc.RpcError) as err:
            call([("authorization", "Bearer not-a-token")])
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, method
    for method in ("CreateUser", "BulkCreateUsers", "UpdateUser", "DeleteUser"):
        with pytest.raises(grpc.RpcError) as err:
            calls[method](viewer)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, method
    for method in ("ListUsers", "WatchUserEvents"):
        calls[method](viewer)
    # GetUser is public.
    assert stub.GetUser(PB.GetUserRequest(user_id=user.id)).user.name == "Di"
    # With the right role, every call goes through.
    for method, call in calls.items():
        call(admin)


def test_gzip_compression(server, admin):
    with grpc.insecure_channel(server.addr, compression=grpc.Compression.Gzip) as ch:
        stub = RPC.UserServiceStub(ch)
        user = create(stub, admin, "Gz", "gz@example.com", bio="z" * 1500)
        assert stub.GetUser(PB.GetUserRequest(user_id=user.id)).user.bio == "z" * 1500
