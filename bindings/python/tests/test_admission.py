"""Who may connect: the admission policy, the allowlist and private networks."""

from __future__ import annotations

import time

import pytest

import starling
from conftest import wait_for

K = starling.ErrorKind
AUTHORITY_SEED = bytes([7]) * 32


def seed(n: int) -> bytes:
    return bytes([n]) * 32


def refused(node: starling.Node, reason: str) -> int:
    return node.stats().refused.get(reason, 0)


def kind_of(fn):
    with pytest.raises(starling.StarlingError) as info:
        fn()
    assert str(info.value), "the error carries no message"
    return info.value.kind


def test_policy_refuses_denied_peer_and_admits_allowed(network_id):
    denied_id = starling.public_key(seed(2))
    asked = []

    def policy(peer_id: str) -> bool:
        asked.append(peer_id)
        return peer_id != denied_id

    with starling.Node("127.0.0.1:0", network_id=network_id, admission=policy) as a:
        with starling.Node("127.0.0.1:0", [a.contact], network_id=network_id, identity_seed=seed(2)) as b:
            assert b.id == denied_id
            wait_for(lambda: refused(a, "admission_hook") >= 1, "a to refuse the denied peer")
            assert denied_id in asked
            assert a.stats().neighbors == 0
            assert b.stats().neighbors == 0
        with starling.Node("127.0.0.1:0", [a.contact], network_id=network_id) as c:
            wait_for(lambda: c.stats().neighbors > 0 and a.stats().neighbors > 0, "the allowed peer to connect")
            assert c.id in asked


def test_raising_policy_refuses_without_crashing(network_id, caplog):
    def policy(peer_id: str) -> bool:
        raise RuntimeError("policy bug")

    with starling.Node("127.0.0.1:0", network_id=network_id, admission=policy) as a:
        with starling.Node("127.0.0.1:0", [a.contact], network_id=network_id) as b:
            wait_for(lambda: refused(a, "admission_hook") >= 1, "a to refuse the peer its policy raised on")
            assert a.stats().neighbors == 0 and b.stats().neighbors == 0
            a.publish("still-up", b"x")  # the node keeps working
    assert "admission policy raised" in caplog.text


class _RawRaising(starling._ffi.AdmissionPolicy):
    def allow(self, peer_id: str) -> bool:
        raise RuntimeError("escapes into the library")


def test_policy_exception_reaching_the_library_refuses(network_id):
    # Without the idiomatic wrapper the exception reaches the Rust side, which must deny.
    config = starling._ffi.Config(bind="127.0.0.1:0", network_id=network_id)
    raw = starling._ffi.Node.with_admission(config, _RawRaising())
    try:
        with starling.Node("127.0.0.1:0", [raw.contact()], network_id=network_id) as b:
            wait_for(
                lambda: raw.stats().refused.get("admission_hook", 0) >= 1,
                "the raw node to refuse the peer",
            )
            assert raw.stats().neighbors == 0 and b.stats().neighbors == 0
    finally:
        raw.shutdown()


def test_allowlist(network_id):
    allowed = starling.public_key(seed(3))
    with starling.Node("127.0.0.1:0", network_id=network_id, allowlist=[allowed]) as a:
        with starling.Node("127.0.0.1:0", [a.contact], network_id=network_id) as stranger:
            wait_for(lambda: refused(a, "admission_hook") >= 1, "a to refuse a peer not on its allowlist")
            assert stranger.stats().neighbors == 0
        with starling.Node("127.0.0.1:0", [a.contact], network_id=network_id, identity_seed=seed(3)) as friend:
            wait_for(lambda: friend.stats().neighbors > 0, "the allowlisted peer to connect")


def member(n: int, network_id: str, **kwargs) -> starling.Node:
    cred = starling.issue_credential(
        AUTHORITY_SEED, starling.public_key(seed(n)), network_id, int(time.time()) + 3600
    )
    return starling.Node(
        "127.0.0.1:0",
        network_id=network_id,
        identity_seed=seed(n),
        authority=starling.public_key(AUTHORITY_SEED),
        credential=cred,
        **kwargs,
    )


def test_private_network_admits_members_and_refuses_outsiders(network_id):
    with member(10, network_id) as m1, member(11, network_id, bootstrap=[]) as m2:
        m2.join(m1.contact)
        wait_for(lambda: m1.stats().neighbors > 0 and m2.stats().neighbors > 0, "the members to connect")
        with starling.Node("127.0.0.1:0", [m1.contact], network_id=network_id) as outsider:
            wait_for(
                lambda: any(k.startswith("credential_") for k in m1.stats().refused),
                "m1 to refuse the outsider without a credential",
            )
            assert outsider.stats().neighbors == 0
        # A member of another authority's network of the same id is refused too.
        other = bytes([8]) * 32
        cred = starling.issue_credential(other, starling.public_key(seed(12)), network_id, int(time.time()) + 3600)
        with starling.Node(
            "127.0.0.1:0",
            [m1.contact],
            network_id=network_id,
            identity_seed=seed(12),
            authority=starling.public_key(other),
            credential=cred,
        ) as foreign:
            wait_for(
                lambda: m1.stats().refused.get("credential_wrong_authority", 0) >= 1,
                "m1 to refuse the other authority's member",
            )
            assert foreign.stats().neighbors == 0


def test_private_network_bad_input(network_id):
    auth = starling.public_key(AUTHORITY_SEED)
    me = starling.public_key(seed(20))
    later = int(time.time()) + 3600
    good = starling.issue_credential(AUTHORITY_SEED, me, network_id, later)

    def node(**kw):
        kw.setdefault("identity_seed", seed(20))
        return starling.Node("127.0.0.1:0", network_id=network_id, **kw)

    assert kind_of(lambda: node(authority=auth, credential="garbage")) == K.INVALID_CREDENTIAL
    assert kind_of(lambda: node(authority=auth, credential="starling-credential-v1 zz")) == K.INVALID_CREDENTIAL
    other = starling.issue_credential(seed(9), me, network_id, later)
    assert kind_of(lambda: node(authority=auth, credential=other)) == K.INVALID_CREDENTIAL
    expired = starling.issue_credential(AUTHORITY_SEED, me, network_id, 1)
    assert kind_of(lambda: node(authority=auth, credential=expired)) == K.INVALID_CREDENTIAL
    assert kind_of(lambda: node(authority=auth, credential=good, identity_seed=seed(21))) == K.INVALID_CREDENTIAL
    wrong_net = starling.issue_credential(AUTHORITY_SEED, me, network_id + "-x", later)
    assert kind_of(lambda: node(authority=auth, credential=wrong_net)) == K.INVALID_CREDENTIAL
    # A generated identity never matches: the core says so at start.
    assert kind_of(lambda: node(authority=auth, credential=good, identity_seed=None)) == K.INVALID_CONFIG
    assert kind_of(lambda: node(authority="zz", credential=good)) == K.INVALID_CONFIG
    assert kind_of(lambda: node(authority=auth)) == K.INVALID_CONFIG
    assert kind_of(lambda: node(credential=good)) == K.INVALID_CONFIG
    assert kind_of(lambda: node(identity_seed=b"short")) == K.INVALID_CONFIG
    assert kind_of(lambda: node(identity_file="/tmp/x", identity_seed=seed(1))) == K.INVALID_CONFIG
    assert kind_of(lambda: node(allowlist=["not hex"])) == K.INVALID_CONFIG
    assert kind_of(lambda: starling.public_key(b"short")) == K.INVALID_ARGUMENT
    assert kind_of(lambda: starling.issue_credential(AUTHORITY_SEED, "zz", network_id, later)) == K.INVALID_ARGUMENT
    assert kind_of(lambda: starling.issue_credential(AUTHORITY_SEED, me, "", later)) == K.INVALID_ARGUMENT
    with pytest.raises(TypeError):
        node(admission="yes")
    # The good one starts.
    node(authority=auth, credential=good).close()
