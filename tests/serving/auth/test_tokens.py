"""Token store: hashed at rest, verified in constant time, revocable without a restart."""

import json
import os
import stat

import pytest

from serving.auth.policy import required_scope
from serving.auth.tokens import SCOPES, TokenError, TokenStore


def test_tokens_are_stored_hashed_and_verified(tmp_path):
    store = TokenStore.at_home(tmp_path)
    assert not store.active
    token = store.create("svc", ["predict"])
    raw = (tmp_path / "tokens.json").read_text()
    secret = token.rsplit("_", 1)[1]
    assert secret not in raw and json.loads(raw)["tokens"][0]["scopes"] == ["predict"]
    assert stat.S_IMODE(os.stat(tmp_path / "tokens.json").st_mode) == 0o600
    rec = TokenStore.at_home(tmp_path).verify(token)
    assert rec is not None and rec.name == "svc" and rec.allows("predict")
    assert not rec.allows("admin") and not rec.allows("push")
    for bad in ("", "tsr_", token[:-1], token + "x", token.replace("tsr_", "abc_"),
                f"tsr_{rec.id}"):
        assert store.verify(bad) is None, bad


def test_revoked_tokens_stop_working_for_a_server_that_keeps_running(tmp_path):
    admin = TokenStore.at_home(tmp_path)
    token = admin.create("svc", ["predict", "ui"])
    server = TokenStore.at_home(tmp_path)  # another process's view of the same file
    assert server.verify(token) is not None
    admin.revoke(server.verify(token).id)
    server.reload(force=True)
    assert server.verify(token) is None and not server.active


def test_admin_may_do_everything_and_scopes_are_checked(tmp_path):
    store = TokenStore.at_home(tmp_path)
    rec = store.verify(store.create("ops", ["admin"]))
    assert all(rec.allows(s) for s in SCOPES)
    with pytest.raises(TokenError, match="choose from"):
        store.create("x", ["predcit"])
    with pytest.raises(TokenError, match="no token with id"):
        store.revoke("nope")


def test_the_policy_denies_by_default():
    assert required_scope("GET", "/healthz") == "" and required_scope("GET", "/metrics") == ""
    assert required_scope("POST", "/v1/predict/fraud") == "predict"
    assert required_scope("GET", "/v1/predict/fraud") == "admin"  # not a listed method
    assert required_scope("DELETE", "/anything/new") == "admin"
