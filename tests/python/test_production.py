"""The production surface from Python's own grpcio libraries: health
checking as load balancers use it."""

import os
import subprocess

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import PB, RPC, Server


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


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(tmp):
    """A CA, and a server (127.0.0.1, localhost) and a client certificate it signed."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=test CA", cwd=tmp)
    for name, san in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "extendedKeyUsage=clientAuth")):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=tmp)
        with open(os.path.join(tmp, f"{name}.ext"), "w") as f:
            f.write(san + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext", cwd=tmp)
    return lambda name: open(os.path.join(tmp, name), "rb").read()


def test_tls_and_mtls_from_grpcio(tmp_path):
    tmp = str(tmp_path)
    pki = make_pki(tmp)
    server = Server(tmp, ["--tls-cert", f"{tmp}/server.pem", "--tls-key", f"{tmp}/server.key", "--client-ca", f"{tmp}/ca.pem"])
    try:
        admin = [("authorization", f"Bearer {server.token('admin')}")]
        with_cert = grpc.ssl_channel_credentials(root_certificates=pki("ca.pem"), private_key=pki("client.key"), certificate_chain=pki("client.pem"))
        with grpc.secure_channel(server.addr, with_cert) as channel:
            stub = RPC.UserServiceStub(channel)
            user = stub.CreateUser(PB.CreateUserRequest(name="Tls", email="tls@example.com"), metadata=admin)
            assert stub.GetUser(PB.GetUserRequest(user_id=user.id)).user == user

        without_cert = grpc.ssl_channel_credentials(root_certificates=pki("ca.pem"))
        with grpc.secure_channel(server.addr, without_cert) as channel:
            with pytest.raises(grpc.RpcError) as err:
                RPC.UserServiceStub(channel).GetUser(PB.GetUserRequest(user_id=user.id), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()
