"""The browser's owner cookie: unforgeable, and the rule of who may read a job."""

from __future__ import annotations

from backend.owners import PUBLIC_OWNER, may_read, new_owner_cookie, owner_from_cookie


def test_a_fresh_cookie_reads_back_as_its_owner() -> None:
    owner, cookie = new_owner_cookie("s3cret")
    assert owner_from_cookie(cookie, "s3cret") == owner
    assert new_owner_cookie("s3cret")[0] != owner


def test_tampered_or_foreign_cookies_are_refused() -> None:
    owner, cookie = new_owner_cookie("s3cret")
    other_owner = ("0" if owner[0] != "0" else "1") + owner[1:]
    assert owner_from_cookie(cookie, "another-secret") is None
    assert owner_from_cookie(other_owner + cookie[len(owner) :], "s3cret") is None
    for junk in (None, "", "abc", ".", owner, f"{owner}.", "x" * 32 + "." + "y" * 32):
        assert owner_from_cookie(junk, "s3cret") is None


def test_jobs_are_visible_to_their_owner_and_public_jobs_to_anyone() -> None:
    assert may_read("alice", "alice")
    assert not may_read("alice", "bob")
    assert not may_read("alice", PUBLIC_OWNER)
    assert may_read(PUBLIC_OWNER, "bob")
