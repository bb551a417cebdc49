"""A UserService server in Python grpcio, generated from our .proto: the peer
for our hand-written Rust client (tests/interop_python.rs).

It keeps users in memory and implements all seven RPCs plainly. It prints
`PORT <n>` once it listens on 127.0.0.1, then serves until killed.
"""

import itertools
import queue
import threading
import time
from concurrent import futures

import grpc

from conftest import PB, RPC


class Users(RPC.UserServiceServicer):
    def __init__(self):
        self.users = {}
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        self.watchers = []

    def _publish(self, kind, user):
        event = PB.UserEvent(event_type=kind, user_id=user.id, payload=user.SerializeToString(), timestamp=int(time.time() * 1000))
        for q in list(self.watchers):
            q.put(event)

    def _create(self, request):
        user = PB.User(id=str(next(self.ids)), name=request.name, email=request.email,
                       role=request.role or PB.USER_ROLE_VIEWER, created_at=int(time.time()))
        if request.HasField("bio"):
            user.bio = request.bio
        self.users[user.id] = user
        return user

    def _get(self, user_id, context):
        user = self.users.get(user_id)
        if user is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"user {user_id} not found")
        return user

    def GetUser(self, request, context):
        return PB.GetUserResponse(user=self._get(request.user_id, context))

    def CreateUser(self, request, context):
        with self.lock:
            user = self._create(request)
        self._publish("user_created", user)
        return user

    def ListUsers(self, request, context):
        users = list(self.users.values())[request.offset:]
        if request.limit:
            users = users[: request.limit]
        yield from users

    def BulkCreateUsers(self, request_iterator, context):
        requests = list(request_iterator)
        with self.lock:
            created = [self._create(r) for r in requests]
        for user in created:
            self._publish("user_created", user)
        return PB.ListUsersResponse(users=created, total_count=len(created))

    def WatchUserEvents(self, request_iterator, context):
        events = queue.Queue()
        subscriptions = set()

        def read():
            for request in request_iterator:
                subscriptions.add(request.user_id)
                events.put(PB.UserEvent(event_type="subscribed", user_id=request.user_id))

        self.watchers.append(events)
        threading.Thread(target=read, daemon=True).start()
        try:
            while context.is_active():
                try:
                    event = events.get(timeout=0.1)
                except queue.Empty:
                    continue
                if event.event_type == "subscribed" or "*" in subscriptions or event.user_id in subscriptions:
                    yield event
        finally:
            self.watchers.remove(events)

    def UpdateUser(self, request, context):
        user = self._get(request.user_id, context)
        for field in ("name", "email", "role", "bio"):
            if request.HasField(field):
                setattr(user, field, getattr(request, field))
        self._publish("user_updated", user)
        return user

    def DeleteUser(self, request, context):
        user = self._get(request.user_id, context)
        del self.users[user.id]
        self._publish("user_deleted", user)
        return PB.DeleteUserResponse(user=user)


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    RPC.add_UserServiceServicer_to_server(Users(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
