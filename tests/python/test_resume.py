"""Watches that resume, from grpcio with stubs generated from
proto/user_service.proto: what a Python cache of the directory does. It
lists, notes the sequence the listing reflects, watches from it, and after
its server is gone resumes on the next one from the last change it saw."""

import grpc
import pytest

from conftest import PB, RPC, Server


def apply(cache, event):
    """Applies one change to the cache: events carry the whole user."""
    if event.event_type == "user_deleted":
        cache.pop(event.user_id, None)
    else:
        cache[event.user_id] = PB.User.FromString(event.payload)


def test_a_cache_resumes_on_the_next_server_and_misses_nothing(tmp_path):
    first = Server(str(tmp_path))
    admin = [("authorization", f"Bearer {first.token('admin')}")]
    try:
        with grpc.insecure_channel(first.addr) as channel:
            stub = RPC.UserServiceStub(channel)
            ann = stub.CreateUser(PB.CreateUserRequest(name="Ann", email="ann@py.test"), metadata=admin)
            listing = stub.ListUsers(PB.ListUsersRequest(), metadata=admin)
            cache = {user.id: user for user in listing}
            listed_at = int(dict(listing.initial_metadata())["usersvc-sequence"])
            assert listed_at > 0
            bob = stub.CreateUser(PB.CreateUserRequest(name="Bob", email="bob@py.test"), metadata=admin)

            events = stub.SubscribeUserEvents(
                PB.SubscribeUserEventsRequest(user_ids=["*"], resume_after=listed_at), metadata=admin
            )
            assert next(events).event_type == "subscribed"
            event = next(events)
            assert (event.event_type, event.user_id) == ("user_created", bob.id)
            assert event.sequence > listed_at
            apply(cache, event)
            last = event.sequence
            events.cancel()
    finally:
        first.stop()

    # The next server, on the same file; changes are made before the cache
    # comes back.
    second = Server(str(tmp_path))
    try:
        with grpc.insecure_channel(second.addr) as channel:
            stub = RPC.UserServiceStub(channel)
            carl = stub.CreateUser(PB.CreateUserRequest(name="Carl", email="carl@py.test"), metadata=admin)
            stub.DeleteUser(PB.DeleteUserRequest(user_id=ann.id), metadata=admin)

            events = stub.SubscribeUserEvents(
                PB.SubscribeUserEventsRequest(user_ids=["*"], resume_after=last), metadata=admin
            )
            assert next(events).event_type == "subscribed"
            missed = [next(events), next(events)]
            assert [(e.event_type, e.user_id, e.sequence) for e in missed] == [
                ("user_created", carl.id, last + 1),
                ("user_deleted", ann.id, last + 2),
            ]
            for event in missed:
                apply(cache, event)
            events.cancel()

            now = {user.id: user.name for user in stub.ListUsers(PB.ListUsersRequest(), metadata=admin)}
            assert {id: user.name for id, user in cache.items()} == now == {bob.id: "Bob", carl.id: "Carl"}

            with pytest.raises(grpc.RpcError) as err:
                list(stub.SubscribeUserEvents(
                    PB.SubscribeUserEventsRequest(user_ids=["*"], resume_after=last + 100), metadata=admin
                ))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details() == f"resume point {last + 100} is ahead of the newest change {last + 2}"
    finally:
        second.stop()
