"""Tokens from an identity provider: keys published as a JWKS by a server in
this test, tokens minted by PyJWT with `cryptography`'s keys, checked by a
real `usersvc serve` over gRPC (grpcio) and Connect (plain HTTP)."""

import base64
import hashlib
import hmac
import http.server
import json
import os
import threading
import time
import urllib.error
import urllib.request

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from conftest import PB, RPC, Server

ISSUER = "https://idp.test/realms/usersvc"
AUDIENCE = "usersvc"


class Provider:
    """A JWKS endpoint: the keys it publishes can be changed, it can be
    taken down (503), and it counts the fetches it answered."""

    def __init__(self):
        self.keys = {}
        self.published = []
        self.down = False
        self.fetches = 0
        provider = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if provider.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                provider.fetches += 1
                body = json.dumps({"keys": [provider.keys[kid]["jwk"] for kid in provider.published]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/realms/usersvc/protocol/openid-connect/certs"

    def add(self, kid, algorithm):
        """Makes a key pair for `algorithm`; publishes nothing yet."""
        if algorithm in ("RS256", "PS256"):
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
        elif algorithm == "ES256":
            private = ec.generate_private_key(ec.SECP256R1())
            jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
        else:
            private = ed25519.Ed25519PrivateKey.generate()
            jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
        jwk.update(kid=kid, alg=algorithm, use="sig")
        self.keys[kid] = {"private": private, "jwk": jwk, "alg": algorithm}

    def publish(self, *kids):
        self.published = list(kids)

    def token(self, kid, sub="alice", role="admin", **overrides):
        key = self.keys[kid]
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300}
        if role is not None:
            claims["role"] = role
        claims.update(overrides)
        return jwt.encode(claims, key["private"], algorithm=key["alg"], headers={"kid": kid})

    def stop(self):
        self.http.shutdown()


@pytest.fixture
def provider():
    p = Provider()
    yield p
    p.stop()


# The least refetch interval the server takes; a test that needs another
# refetch waits this long first.
INTERVAL = 1


def next_refetch():
    time.sleep(INTERVAL + 0.1)


def start(tmp_path, provider, *extra):
    """A server taking the provider's tokens; GetUser needs one too."""
    env = {k: v for k, v in os.environ.items() if k != "USERSVC_JWT_SECRET"}
    return Server(str(tmp_path), [
        "--jwks-url", provider.url, "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE,
        "--public-methods=", *extra,
    ], env=env)


def signed_with_the_public_key(provider, kid):
    """An admin token with `alg: HS256` whose HMAC secret is the provider's
    public key in PEM, as an attacker who fetched the JWKS can make. PyJWT
    refuses to make one, so it is put together here."""
    public_pem = provider.keys[kid]["private"].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    b64 = lambda data: base64.urlsafe_b64encode(data).rstrip(b"=")
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = b64(json.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "role": "admin",
                              "exp": int(time.time()) + 300}).encode())
    signature = b64(hmac.new(public_pem, header + b"." + payload, hashlib.sha256).digest())
    return (header + b"." + payload + b"." + signature).decode()


def grpc_list(server, token):
    """ListUsers over gRPC: the users' emails, or the RpcError."""
    with grpc.insecure_channel(server.addr) as channel:
        stub = RPC.UserServiceStub(channel)
        try:
            return [u.email for u in stub.ListUsers(PB.ListUsersRequest(), metadata=[("authorization", f"Bearer {token}")], timeout=10)]
        except grpc.RpcError as error:
            return error


def grpc_create(server, token, email):
    with grpc.insecure_channel(server.addr) as channel:
        stub = RPC.UserServiceStub(channel)
        return stub.CreateUser(PB.CreateUserRequest(name="Via IdP", email=email),
                               metadata=[("authorization", f"Bearer {token}")], timeout=10)


def connect(server, method, body, token):
    """A Connect unary call with JSON: (HTTP status, decoded body)."""
    request = urllib.request.Request(
        f"http://{server.addr}/techoral.users.v1.UserService/{method}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Connect-Protocol-Version": "1",
                 "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def refused(server, token):
    """The refusal over both protocols, ListUsers on gRPC and GetUser on
    Connect: (gRPC code, message, Connect code, Connect message)."""
    error = grpc_list(server, token)
    assert isinstance(error, grpc.RpcError), f"gRPC took the token: {error}"
    status, body = connect(server, "GetUser", {"userId": "0190b7c8-0000-7000-8000-000000000000"}, token)
    assert status in (401, 403), body
    return error.code(), error.details(), body["code"], body["message"]


def test_each_algorithm_is_taken_from_its_key_over_grpc_and_connect(tmp_path, provider):
    for kid, algorithm in [("rs", "RS256"), ("ps", "PS256"), ("es", "ES256"), ("ed", "EdDSA")]:
        provider.add(kid, algorithm)
    provider.publish("rs", "ps", "es", "ed")
    server = start(tmp_path, provider)
    try:
        for kid in ["rs", "ps", "es", "ed"]:
            token = provider.token(kid, sub=f"sub-{kid}", role="editor")
            created = grpc_create(server, token, f"{kid}@example.com")
            assert created.email == f"{kid}@example.com"
            status, body = connect(server, "GetUser", {"userId": created.id}, token)
            assert (status, body["user"]["email"]) == (200, f"{kid}@example.com"), body
        # Each token's subject is its audit line's actor.
        # (The log is written behind the calls: wait for the last line.)
        expected = {"sub-rs", "sub-ps", "sub-es", "sub-ed"}
        deadline = time.time() + 10
        while True:
            actors = {r["fields"].get("actor") for r in server.records() if r.get("target") == "usersvc::audit"}
            if expected <= actors or time.time() > deadline:
                break
            time.sleep(0.05)
        assert expected <= actors, actors
        # A header that names another algorithm than its key's is refused,
        # though the signature is the key's own (PS256 and RS256 share RSA).
        forged = jwt.encode(jwt.decode(provider.token("ps"), options={"verify_signature": False}),
                            provider.keys["ps"]["private"], algorithm="RS256", headers={"kid": "ps"})
        code, message, connect_code, _ = refused(server, forged)
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "the token says RS256, but its key ps is for PS256" in message, message
        assert connect_code == "unauthenticated"
    finally:
        server.stop()


def test_rotation_old_key_then_both_then_the_new_only(tmp_path, provider):
    provider.add("2026-old", "RS256")
    provider.add("2026-new", "ES256")
    provider.add("probe", "EdDSA")
    provider.publish("2026-old")
    server = start(tmp_path, provider, "--jwks-refetch-interval", f"{INTERVAL}s")
    try:
        old = provider.token("2026-old")
        assert grpc_list(server, old) == []
        new = provider.token("2026-new")
        assert refused(server, new)[0] == grpc.StatusCode.UNAUTHENTICATED, "not published yet"

        # The provider publishes the new key before signing with it: the
        # first token that names it makes the server fetch again.
        provider.publish("2026-old", "2026-new")
        next_refetch()
        before = provider.fetches
        assert grpc_list(server, new) == []
        assert provider.fetches == before + 1
        # Past the token check, GetUser finds no such user.
        assert connect(server, "GetUser", {"userId": "0190b7c8-0000-7000-8000-000000000000"}, new)[0] == 404
        assert grpc_list(server, old) == [], "the old key stays while its tokens live"

        # The old key is withdrawn; the next fetch (here made by a token
        # naming another unknown key) drops it, and its tokens with it,
        # including one the server had already verified.
        provider.publish("2026-new")
        next_refetch()
        refused(server, provider.token("probe"))
        code, message, connect_code, connect_message = refused(server, old)
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert 'unknown key id "2026-old"' in message, message
        assert (connect_code, 'unknown key id "2026-old"' in connect_message) == ("unauthenticated", True)
        assert grpc_list(server, new) == []
    finally:
        server.stop()


def test_an_unknown_kid_makes_one_refetch_then_is_unauthenticated(tmp_path, provider):
    provider.add("k1", "ES256")
    provider.add("stranger", "ES256")
    provider.publish("k1")
    server = start(tmp_path, provider, "--jwks-refetch-interval", "1h")
    try:
        assert provider.fetches == 1
        code, message, connect_code, _ = refused(server, provider.token("stranger"))
        assert (code, connect_code) == (grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")
        assert 'unknown key id "stranger"' in message, message
        # The gRPC call fetched once; the Connect call, within the
        # interval, did not fetch again.
        assert provider.fetches == 2
        for _ in range(5):
            refused(server, provider.token("stranger"))
        assert provider.fetches == 2
        assert grpc_list(server, provider.token("k1")) == []
    finally:
        server.stop()


def test_wrong_issuer_audience_expiry_none_and_the_public_key_as_a_secret(tmp_path, provider):
    provider.add("k1", "RS256")
    provider.publish("k1")
    server = start(tmp_path, provider)
    try:
        cases = {
            "wrong issuer": provider.token("k1", iss="https://elsewhere.test"),
            "wrong audience": provider.token("k1", aud="another-app"),
            "expired": provider.token("k1", exp=int(time.time()) - 3600),
        }
        for reason, token in cases.items():
            code, message, connect_code, connect_message = refused(server, token)
            assert (code, connect_code) == (grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")
            assert reason in message and reason in connect_message, (reason, message)

        none = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "role": "admin",
                           "exp": int(time.time()) + 300}, None, algorithm="none")
        code, message, _, _ = refused(server, none)
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert 'algorithm "none" is not accepted' in message, message

        # The classic confusion: HS256 "signed" with the public key, which
        # anyone can fetch, as the HMAC secret.
        confused = signed_with_the_public_key(provider, "k1")
        code, message, connect_code, _ = refused(server, confused)
        assert (code, connect_code) == (grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")
        assert "algorithm HS256 is not accepted" in message, message
        # None of them can write, either.
        for token in (none, confused, cases["expired"]):
            with pytest.raises(grpc.RpcError) as denied:
                grpc_create(server, token, "mallory@example.com")
            assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert grpc_list(server, provider.token("k1")) == []
    finally:
        server.stop()


def test_the_provider_down_keeps_the_cached_keys_and_then_comes_back(tmp_path, provider):
    provider.add("k1", "EdDSA")
    provider.add("k2", "EdDSA")
    provider.publish("k1")
    server = start(tmp_path, provider, "--jwks-refetch-interval", f"{INTERVAL}s")
    try:
        provider.down = True
        provider.publish("k1", "k2")
        code, message, _, _ = refused(server, provider.token("k2"))
        assert code == grpc.StatusCode.UNAUTHENTICATED and 'unknown key id "k2"' in message
        # That refetch failed; the key fetched before still verifies.
        assert grpc_list(server, provider.token("k1")) == []
        assert server.metric("usersvc_jwks_fetch_failures_total") >= 1
        assert server.metric("usersvc_jwks_keys") == 1
        warnings = [r for r in server.records() if "cannot fetch the JWKS" in r.get("fields", {}).get("message", "")]
        assert warnings and "503" in warnings[-1]["fields"]["error"], warnings

        provider.down = False
        next_refetch()
        assert grpc_list(server, provider.token("k2")) == []
        assert server.metric("usersvc_jwks_keys") == 2
    finally:
        server.stop()


def test_a_keycloak_shaped_token_gets_its_role_from_realm_access(tmp_path, provider):
    provider.add("kc", "RS256")
    provider.publish("kc")
    server = start(tmp_path, provider, "--role-claim", "realm_access.roles",
                   "--role-map", "directory-admin=admin", "--role-map", "directory-reader=viewer")

    def keycloak(roles):
        # What Keycloak puts in an access token: an audience array, azp,
        # typ, the realm's roles, and no `role` claim.
        return provider.token("kc", sub="f3b5c2d0-6c1e-4b6e-9e53-3c8f7c1a2b4d", role=None,
                              aud=["account", AUDIENCE], azp="usersvc-console", typ="Bearer",
                              preferred_username="alice",
                              realm_access={"roles": ["offline_access", "uma_authorization", *roles]})
    try:
        created = grpc_create(server, keycloak(["directory-reader", "directory-admin"]), "kc@example.com")
        assert created.email == "kc@example.com"
        reader = keycloak(["directory-reader"])
        assert grpc_list(server, reader) == ["kc@example.com"]
        with pytest.raises(grpc.RpcError) as denied:
            grpc_create(server, reader, "reader@example.com")
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "role viewer may not call CreateUser" in denied.value.details()

        code, message, connect_code, connect_message = refused(server, keycloak([]))
        assert (code, connect_code) == (grpc.StatusCode.PERMISSION_DENIED, "permission_denied")
        assert "carries no role in its claim realm_access.roles" in message, message
        assert "directory-admin, directory-reader" in connect_message, connect_message
    finally:
        server.stop()


def test_a_provider_down_at_start_is_unavailable_until_it_answers(tmp_path, provider):
    provider.add("k1", "ES256")
    provider.publish("k1")
    provider.down = True
    server = start(tmp_path, provider, "--jwks-refetch-interval", f"{INTERVAL}s")
    try:
        token = provider.token("k1")
        error = grpc_list(server, token)
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error
        assert "no signing keys from" in error.details() and "503" in error.details(), error.details()
        status, body = connect(server, "GetUser", {"userId": "0190b7c8-0000-7000-8000-000000000000"}, token)
        assert (status, body["code"]) == (503, "unavailable"), body
        provider.down = False
        next_refetch()
        assert grpc_list(server, token) == []
    finally:
        server.stop()


def test_with_hs256_on_too_a_token_signed_with_the_public_key_is_a_bad_signature(tmp_path, provider):
    """With --jwt-secret-file, HS256 tokens are taken beside the provider's:
    they are checked with that secret, never with a published key."""
    from conftest import SECRET
    provider.add("k1", "RS256")
    provider.publish("k1")
    secret_file = tmp_path / "jwt-secret"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o600)
    server = start(tmp_path, provider, "--jwt-secret-file", str(secret_file))
    try:
        confused = signed_with_the_public_key(provider, "k1")
        code, message, connect_code, _ = refused(server, confused)
        assert (code, connect_code) == (grpc.StatusCode.UNAUTHENTICATED, "unauthenticated")
        assert "bad signature" in message, message
        # A token signed with the secret itself is taken, as is the provider's.
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "local", "role": "admin", "exp": int(time.time()) + 300}
        own = jwt.encode(claims, SECRET, algorithm="HS256")
        assert grpc_create(server, own, "own@example.com").email == "own@example.com"
        assert grpc_list(server, provider.token("k1")) == ["own@example.com"]
    finally:
        server.stop()
