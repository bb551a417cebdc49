"""SearchUsers, labels and etags from grpcio, with stubs generated from
proto/user_service.proto: what a Python client of the directory does."""

import grpc
import pytest

from conftest import PB


def test_search_walks_pages_with_a_total(stub, admin):
    requests = [
        PB.CreateUserRequest(name=f"Py {i:02}", email=f"py{i}@py.test", labels={"team": "core" if i % 3 == 0 else "edge"})
        for i in range(10)
    ]
    stub.BulkCreateUsers(iter(requests), metadata=admin)
    stub.CreateUser(PB.CreateUserRequest(name="Other", email="other@elsewhere.test"), metadata=admin)

    names, token, pages = [], "", 0
    while True:
        page = stub.SearchUsers(
            PB.SearchUsersRequest(filter='email = "*@py.test"', order_by="name desc", page_size=4, page_token=token),
            metadata=admin,
        )
        assert page.total_size == 10
        names += [u.name for u in page.users]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert names == [f"Py {i:02}" for i in reversed(range(10))]

    core = stub.SearchUsers(PB.SearchUsersRequest(filter='labels.team = "CORE"'), metadata=admin)
    assert core.total_size == 4
    assert sorted(u.name for u in core.users) == ["Py 00", "Py 03", "Py 06", "Py 09"]
    assert all(u.labels["team"] == "core" for u in core.users)

    first = stub.SearchUsers(PB.SearchUsersRequest(filter='email = "*@py.test"', page_size=4), metadata=admin)
    with pytest.raises(grpc.RpcError) as err:
        stub.SearchUsers(
            PB.SearchUsersRequest(filter="labels:team", page_size=4, page_token=first.next_page_token),
            metadata=admin,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "invalid page_token" in err.value.details()

    with pytest.raises(grpc.RpcError) as err:
        stub.SearchUsers(PB.SearchUsersRequest(filter="name = "), metadata=admin)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at character 8" in err.value.details()


def test_an_update_with_a_stale_etag_is_aborted(stub, admin):
    user = stub.CreateUser(PB.CreateUserRequest(name="Etta", email="etta@py.test"), metadata=admin)
    changed = stub.UpdateUser(
        PB.UpdateUserRequest(user_id=user.id, name="Etta 2", etag=user.etag, set_labels={"team": "core"}),
        metadata=admin,
    )
    assert changed.etag != user.etag
    assert dict(changed.labels) == {"team": "core"}
    with pytest.raises(grpc.RpcError) as err:
        stub.UpdateUser(PB.UpdateUserRequest(user_id=user.id, name="Etta 3", etag=user.etag), metadata=admin)
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert "changed since it was read" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.DeleteUser(PB.DeleteUserRequest(user_id=user.id, etag=user.etag), metadata=admin)
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert stub.GetUser(PB.GetUserRequest(user_id=user.id)).user == changed
    gone = stub.DeleteUser(PB.DeleteUserRequest(user_id=user.id, etag=changed.etag), metadata=admin)
    assert gone.user == changed


def test_a_bad_label_is_refused_naming_its_key(stub, admin):
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateUser(PB.CreateUserRequest(name="L", email="l@py.test", labels={"Team": "x"}), metadata=admin)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'invalid labels["Team"]' in err.value.details()
