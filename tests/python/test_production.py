"""The production surface from Python's own grpcio libraries: health
checking as load balancers use it."""

import queue

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def test_health_check_and_watch_need_no_token(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "techoral.users.v1.UserService"):
        response = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING, service
    watch = health.Watch(health_pb2.HealthCheckRequest(service="techoral.users.v1.UserService"))
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()


def test_health_turns_not_serving_when_shutdown_begins(server, channel):
    health = health_pb2_grpc.HealthStub(channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    server.process.terminate()
    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()


def test_reflection_lists_describes_and_calls_like_grpcurl(stub, admin, channel):
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    from conftest import PB

    user = stub.CreateUser(PB.CreateUserRequest(name="Reflected", email="reflected@example.com"), metadata=admin)

    database = ProtoReflectionDescriptorDatabase(channel)  # no token
    services = set(database.get_services())
    assert {"techoral.users.v1.UserService", "grpc.health.v1.Health"} <= services

    pool = descriptor_pool.DescriptorPool(database)
    method = pool.FindServiceByName("techoral.users.v1.UserService").methods_by_name["GetUser"]
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    get_user = channel.unary_unary(
        "/techoral.users.v1.UserService/GetUser",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    response = get_user(request_class(user_id=user.id))
    assert response.user.name == "Reflected"
    assert response.user.email == "reflected@example.com"
